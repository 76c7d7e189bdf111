"""Which version answers a request during a rollout: a sticky place in [0, 1) per client key."""

from __future__ import annotations

import hashlib
import random

from lvm_core.rollout.state import RolloutState


def bucket(client_key: str | None, salt: str) -> float:
    """A client key's place in [0, 1): the same key (and salt) always lands at the same place.

    A request without a key is placed at random (its version is not sticky). The salt (the model name
    and challenger version) gives each rollout its own cohort; within a rollout, a key inside a 5%
    share is also inside 20%.
    """
    if not client_key:
        return random.random()
    digest = hashlib.sha256(f"{salt}\x00{client_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def routing_salt(state: RolloutState) -> str:
    return f"{state.name}/v{state.challenger}"

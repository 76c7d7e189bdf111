"""The model a service answers with, and the swap when its registry alias moves.

`ModelHolder` owns one `Served` snapshot (the `LoadedModel` plus when/why it was loaded). A request
reads `holder.current` once and uses that snapshot to the end, so a swap (a plain reference
assignment) never changes the model under a request in flight: it finishes on the old one, and the old
model is freed once the last such request drops it. Loading always goes through
`lvm_core.tracking.load_registered_model`, the same loader evaluation uses.

While a staged rollout of the followed model is active (`lvm_core.rollout`, tags re-read on every
refresh), the holder also keeps the challenger loaded, and `route(client_key)` answers with it for
the clients whose key falls inside the challenger's share.

Tags are not trusted on their own: a version is only served when its recorded gates allow it
(`version_blockers`: a challenger needs passed gates; a champion needs them too unless it was promoted with
`force`, which is recorded), and the challenger only while its rollout's lease is live — a rollout flow that
died leaves the champion answering everyone once the lease is past.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lvm_core.contracts.errors import RegistryError
from lvm_core.rollout.routing import bucket, routing_salt
from lvm_core.rollout.state import RolloutState, read_state
from lvm_core.tracking.gate_outcomes import version_blockers
from lvm_core.tracking.references import load_registered_model, parse_reference, resolve_version
from lvm_core.tracking.setup import configure_tracking
from lvm_core.tracking.tags import ALIAS_CHAMPION

_log = logging.getLogger(__name__)

DEFAULT_MODEL_REF = "models:/lvm-amn@champion"
DEFAULT_REFRESH_S = 10.0


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@dataclasses.dataclass(frozen=True)
class Served:
    """One loaded model and where it came from; immutable, replaced as a whole on a swap."""

    model: Any  # lvm_core.tracking.LoadedModel
    ref: str  # what the service was asked to serve (e.g. models:/lvm-amn@champion)
    alias: str | None  # the alias followed, None for a fixed version or a local folder
    loaded_at: str

    @property
    def version_label(self) -> str:
        v = getattr(self.model, "version", None)
        return str(v) if v is not None else "local"

    def describe(self, share: float = 1.0) -> dict[str, Any]:
        m = self.model
        fp = getattr(m, "fingerprint", None)
        return {
            "name": m.name,
            "version": m.version,
            "alias": self.alias,
            "ref": self.ref,
            "source": getattr(m, "source", ""),
            "loaded_at": self.loaded_at,
            "arch": getattr(getattr(m, "config", None), "arch", None),
            "context_len": m.context_len,
            "dim": m.dim,
            "encoder": getattr(fp, "id", None),
            "share": share,
        }


class ModelHolder:
    """Loads the model behind `model_ref` and, for an alias reference, follows the alias.

    `model_ref`: `models:/<name>@<alias>` (followed), `models:/<name>/<version>` or a local model folder
    (fixed). `refresh_s`: how often the alias is re-read. `on_swap(old, new)` is called after each swap
    (`old` is None for the first load); `on_load_error(exc)` after each failed load or lookup.
    """

    def __init__(
        self,
        model_ref: str = DEFAULT_MODEL_REF,
        data_dir: Path | str | None = None,
        *,
        refresh_s: float = DEFAULT_REFRESH_S,
        device: str = "cpu",
        loader: Callable[..., Any] = load_registered_model,
        on_swap: Callable[[Served | None, Served], None] | None = None,
        on_load_error: Callable[[BaseException], None] | None = None,
        on_rollout: Callable[[RolloutState | None], None] | None = None,
    ):
        self.model_ref = str(model_ref)
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.refresh_s = float(refresh_s)
        self.device = device
        self._loader = loader
        self._on_swap = on_swap
        self._on_load_error = on_load_error
        self._on_rollout = on_rollout
        self._current: Served | None = None
        self._challenger: Served | None = None  # loaded while a rollout of the followed model is active
        self._rollout: RolloutState | None = None
        self.challenger_blocked: str | None = None  # why the rollout's challenger is not routed, if it is not
        self._swap_lock = threading.Lock()  # one load/swap at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_check_at: str | None = None
        self.last_error: str | None = None
        self.swaps = 0
        self._tracking_ready = False
        self._name, self._alias = self._parse(self.model_ref)

    # --- what is served ---------------------------------------------------------------------------

    @property
    def current(self) -> Served | None:
        """The snapshot to answer with (read it once per request); None until the first load."""
        return self._current

    @property
    def challenger(self) -> Served | None:
        """The challenger of the active rollout, None when there is none (or it is not loaded yet)."""
        return self._challenger

    @property
    def rollout_state(self) -> RolloutState | None:
        """The rollout state read on the last refresh (None when not following the champion alias)."""
        return self._rollout

    def challenger_share(self) -> float:
        """Share of keys the challenger answers now (0 unless it is loaded, its rollout active and its lease live)."""
        st, ch, cur = self._rollout, self._challenger, self._current
        if st is None or not st.routable or ch is None or cur is None or ch.model.version == cur.model.version:
            return 0.0
        return st.share

    def route(self, client_key: str | None) -> Served | None:
        """The snapshot that answers this client: the challenger for keys inside its share, else the champion."""
        champion = self._current
        st, ch = self._rollout, self._challenger
        share = self.challenger_share()
        if champion is None or share <= 0.0 or st is None or ch is None:
            return champion
        return ch if bucket(client_key, routing_salt(st)) < share else champion

    def serving(self) -> list[tuple[Served, float]]:
        """(snapshot, traffic share) of each version answering now."""
        cur, ch = self._current, self._challenger
        if cur is None:
            return []
        share = self.challenger_share()
        out = [(cur, 1.0 - share)]
        if ch is not None and share > 0.0:
            out.append((ch, share))
        return out

    @property
    def ready(self) -> bool:
        return self._current is not None

    @property
    def follows_alias(self) -> bool:
        return self._alias is not None

    @staticmethod
    def _parse(ref: str) -> tuple[str | None, str | None]:
        """(registered name, alias) for an alias reference; (name, None) for a fixed version; (None, None) for a folder."""
        local = Path(ref[len("file://"):] if ref.startswith("file://") else ref)
        if not ref.startswith("models:/") and local.exists():
            return None, None
        name, which = parse_reference(ref)
        if which.isdigit() or which == "latest":
            return name, None
        return name, which

    def _ensure_tracking(self) -> None:
        if not self._tracking_ready and self.data_dir is not None:
            configure_tracking(self.data_dir)
        self._tracking_ready = True

    def _install(self, loaded: Any, alias: str | None) -> Served:
        new = Served(model=loaded, ref=self.model_ref, alias=alias, loaded_at=_now())
        old = self._current
        self._current = new  # the atomic swap: requests that already read `current` keep the old snapshot
        self.swaps += 1
        _log.info("serving %s (was %s)", loaded.describe(), old.model.describe() if old else "nothing")
        if self._on_swap is not None:
            self._on_swap(old, new)
        return new

    def _target_version(self) -> int | None:
        """The version the followed alias points at now (None when not following an alias).

        RegistryError when that version's recorded gates do not allow it to serve: the alias was moved by
        hand to a version that failed its gates; the version being served stays.
        """
        if self._alias is None or self._name is None:
            return None
        mv = resolve_version(self._name, self._alias)
        blockers = version_blockers(mv, allow_forced=True)
        if blockers:
            raise RegistryError(f"{self._name}@{self._alias} points at v{mv.version}, which may not serve: "
                                f"{'; '.join(blockers)}")
        return int(mv.version)

    def load(self) -> Served:
        """Load the model now (blocking) and serve it; raises the loader's error (e.g. ModelNotFoundError)."""
        with self._swap_lock:
            self._ensure_tracking()
            try:
                if self._alias is not None:
                    version = self._target_version()
                    loaded = self._loader(f"models:/{self._name}/{version}", device=self.device)
                else:
                    loaded = self._loader(self.model_ref, device=self.device)
            except BaseException as exc:
                self._record_error(exc, log=False)  # the caller sees the exception
                raise
            self.last_error = None
            self.last_check_at = _now()
            served = self._install(loaded, self._alias)
            try:
                self._refresh_rollout()
            except Exception as exc:  # noqa: BLE001 - the champion serves; the challenger is retried on the next refresh
                self._record_error(exc)
            return served

    def refresh(self) -> bool:
        """Re-read the alias; when it moved, load the new version and swap it in. True if swapped.

        A failed lookup or load keeps the model being served (and is recorded in `last_error`).
        """
        if self._current is None:
            self.load()
            return True
        if self._alias is None:
            return False
        with self._swap_lock:
            self._ensure_tracking()
            swapped = False
            try:
                version = self._target_version()
                self.last_check_at = _now()
                if version != self._current.model.version:
                    ch = self._challenger
                    if ch is not None and ch.model.version == version:  # a promoted challenger: already loaded
                        loaded = ch.model
                    else:
                        loaded = self._loader(f"models:/{self._name}/{version}", device=self.device)
                    self._install(loaded, self._alias)
                    swapped = True
                self._refresh_rollout()
            except Exception as exc:  # noqa: BLE001 - keep serving what is loaded
                self._record_error(exc)
                return swapped
            self.last_error = None
            return swapped

    def _refresh_rollout(self) -> None:
        """Re-read the rollout tags; load the challenger of an active rollout, drop it once it ends.

        Only a holder following the champion alias takes part in rollouts. Called under the swap lock.
        """
        if self._alias != ALIAS_CHAMPION or self._name is None:
            return
        state = read_state(self._name)
        old = self._rollout
        blocked = None
        if state.active and state.challenger is not None:
            blockers = version_blockers(resolve_version(self._name, str(state.challenger)), allow_forced=False)
            blocked = f"challenger v{state.challenger} not routed: {'; '.join(blockers)}" if blockers else None
        if blocked != self.challenger_blocked and blocked is not None:
            _log.warning("rollout of %s: %s", self._name, blocked)
        self.challenger_blocked = blocked
        if state.active and state.challenger is not None and blocked is None:
            ch = self._challenger
            if ch is None or ch.model.version != state.challenger:
                loaded = self._loader(f"models:/{self._name}/{state.challenger}", device=self.device)
                self._challenger = Served(model=loaded, ref=f"models:/{self._name}/{state.challenger}",
                                          alias="challenger", loaded_at=_now())
                _log.info("rollout of %s: challenger %s loaded (share %.0f%%)", self._name, loaded.describe(),
                          state.share * 100)
                if self._on_swap is not None:
                    self._on_swap(ch, self._challenger)
        elif self._challenger is not None:
            gone, self._challenger = self._challenger, None
            _log.info("rollout of %s %s: challenger v%s dropped", self._name, state.status, gone.model.version)
        self._rollout = state
        if self._on_rollout is not None and (old is None or old.window != state.window or old.share != state.share
                                             or old.status != state.status):
            self._on_rollout(state)

    def _record_error(self, exc: BaseException, log: bool = True) -> None:
        self.last_error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        if log:
            _log.warning("model %s: %s; still serving %s", self.model_ref, self.last_error,
                         self._current.model.describe() if self._current else "nothing")
        if self._on_load_error is not None:
            self._on_load_error(exc)

    # --- background refresh -----------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh()
            except Exception:  # noqa: BLE001 - the first load failed (in last_error); retried on the next tick
                _log.warning("model %s not loaded: %s; retrying", self.model_ref, self.last_error)
            wait = self.refresh_s if self._current is not None else min(self.refresh_s, 2.0)
            if not self.follows_alias and self._current is not None:
                return  # fixed version: nothing to follow once loaded
            self._stop.wait(wait)

    def start(self) -> None:
        """Load (if not loaded yet) and follow the alias in a background thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="lvm-model-refresh", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def status(self) -> dict[str, Any]:
        cur = self._current
        return {
            "ref": self.model_ref,
            "follows_alias": self._alias,
            "refresh_interval_s": self.refresh_s if self.follows_alias else None,
            "last_check_at": self.last_check_at,
            "last_error": self.last_error,
            "swaps": self.swaps,
            "ready": cur is not None,
            "rollout": self._rollout.to_dict() if self._rollout is not None else None,
            "challenger_blocked": self.challenger_blocked,
        }

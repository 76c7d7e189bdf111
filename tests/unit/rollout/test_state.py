"""A rollout plan's shares and the state read back from a version's tags."""

from __future__ import annotations

import pytest

from lvm_core.rollout.plan import check_plan
from lvm_core.rollout.state import (
    TAG_CHALLENGER,
    TAG_CHAMPION,
    TAG_PLAN,
    TAG_SHARE,
    TAG_STATUS,
    TAG_STEP,
    TAG_STEP_STARTED_AT,
    state_from_tags,
)


def test_plan_and_state_tags():
    assert check_plan([0.1, 0.5, 1]) == (0.1, 0.5, 1.0)
    for bad in ([0.2, 0.1, 1.0], [0.05, 0.2], [0, 1.0], []):
        with pytest.raises(ValueError, match="increasing shares"):
            check_plan(bad)
    st = state_from_tags("m", {TAG_STATUS: "active", TAG_CHALLENGER: "3",
                                       TAG_CHAMPION: "2", TAG_SHARE: "0.2", TAG_STEP: "1",
                                       TAG_PLAN: "[0.05, 0.2, 1.0]", TAG_STEP_STARTED_AT: "t"})
    assert st.active and st.share_of(3) == 0.2 and st.share_of(2) == pytest.approx(0.8) and st.window == "v3/step1/t"
    assert not state_from_tags("m", {}).active


@pytest.mark.parametrize("owner", ["flow-run:5f046a9b-1ce0-4b7e-971e-7fc6321da1c8", "host-1:pid 4711", "../../etc"])
def test_a_start_ticket_source_is_one_a_tracking_server_accepts(owner: str):
    """The MLflow server checks a model version's source before it registers it (a SQLite store does not): a
    ticket must pass the server's own check, or no rollout could start against a tracking server."""
    from mlflow.server.handlers import _validate_non_local_source_contains_relative_paths
    from mlflow.utils.uri import is_local_uri

    from lvm_core.rollout.state import ticket_source

    source = ticket_source(owner)
    assert not is_local_uri(source)  # a local path would need a run whose artifacts hold it
    _validate_non_local_source_contains_relative_paths(source)
    assert ticket_source(owner) == source and ticket_source(owner + "x") != source
    with pytest.raises(Exception, match="Invalid model version source"):  # what the old source met
        _validate_non_local_source_contains_relative_paths(f"lvm-rollout-start:{owner}")

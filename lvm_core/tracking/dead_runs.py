"""Runs left RUNNING by a process that died: ended KILLED, and the versions they registered marked incomplete.

A killed training process cannot end its own MLflow run: the next run started on this host proves the owner
dead (its pid is gone or reused) and cleans up after it, so a half-trained version is never promoted or
rolled out.
"""

from __future__ import annotations

import json
import math

from lvm_core.runtime.liveness import Owner
from lvm_core.tracking.setup import mlflow_client
from lvm_core.tracking.tags import (
    ALIAS_CHALLENGER,
    MAX_TAG_VALUE,
    TAG_FAILURE,
    TAG_INCOMPLETE,
    TAG_OWNER,
    truncate,
)


def reap_dead_runs(experiment_id: str) -> list[str]:
    """End KILLED the runs a dead process left RUNNING; mark the model versions they registered incomplete.

    Only a process on this host can be proven dead (its pid is gone or reused); runs of other hosts are
    left alone. Returns one line per run reaped.
    """
    client = mlflow_client()
    done: list[str] = []
    for run in client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000):
        try:
            owner = Owner.from_dict(json.loads(run.data.tags[TAG_OWNER]))
        except (KeyError, ValueError, TypeError):
            continue  # no owner record: started by another tool, or before runs recorded their owner
        why = owner.gone(stale_after=math.inf)
        if why is None:
            continue
        client.set_tag(run.info.run_id, TAG_FAILURE, truncate(f"killed: {why}", MAX_TAG_VALUE))
        client.set_terminated(run.info.run_id, status="KILLED")
        line = f"MLflow run {run.info.run_id} ({run.info.run_name}) ended KILLED: {why}"
        for mv in client.search_model_versions(f"run_id = '{run.info.run_id}'"):
            client.set_model_version_tag(mv.name, mv.version, TAG_INCOMPLETE,
                                         f"training run {run.info.run_id} was killed before it finished")
            aliases = client.get_registered_model(mv.name).aliases or {}
            if str(aliases.get(ALIAS_CHALLENGER)) == str(mv.version):
                client.delete_registered_model_alias(mv.name, ALIAS_CHALLENGER)
            line += f"; {mv.name} v{mv.version} marked incomplete"
        done.append(line)
    return done

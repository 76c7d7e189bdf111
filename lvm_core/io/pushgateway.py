"""Retiring metric groups on a Prometheus Pushgateway.

A Pushgateway keeps every group it was sent until someone deletes it, and Prometheus scrapes a group that
nobody pushes any more as if it were fresh. A check that moved on (the drift monitor of a retired reference
dataset) would otherwise leave its last scores and last-run time there for ever: a stale-run alert that
never resolves, and an old drift verdict on the dashboards. So whatever moves a check on deletes the group
it leaves behind; `retire_groups` does that for a job that checks one thing at a time.

Errors reaching the gateway are `OSError`s (urllib's), as with prometheus_client's own push.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Mapping

from prometheus_client import delete_from_gateway

DEFAULT_TIMEOUT_S = 10.0


def _base(url: str) -> str:
    """The gateway's base URL; a bare `host:port` means http, as prometheus_client reads it."""
    return (url if "://" in url else f"http://{url}").rstrip("/")


def pushed_groups(url: str, job: str, timeout: float = DEFAULT_TIMEOUT_S) -> list[dict[str, str]]:
    """The grouping keys (labels besides `job`) of every group of `job` on the gateway.

    Reads the gateway's own listing (`GET /api/v1/metrics`), so groups pushed by another process or an
    earlier run are found too.
    """
    with urllib.request.urlopen(f"{_base(url)}/api/v1/metrics", timeout=timeout) as response:
        body = json.loads(response.read())
    keys = []
    for group in body.get("data") or []:
        labels = {str(k): str(v) for k, v in (group.get("labels") or {}).items()}
        if labels.pop("job", None) == job:
            keys.append(labels)
    return keys


def delete_group(url: str, job: str, grouping_key: Mapping[str, str], timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Delete one group (all its metrics); deleting a group that is not there is not an error."""
    delete_from_gateway(_base(url), job=job, grouping_key=dict(grouping_key), timeout=timeout)


def retire_groups(url: str, job: str, keep: Mapping[str, str],
                  timeout: float = DEFAULT_TIMEOUT_S) -> list[dict[str, str]]:
    """Delete every group of `job` except the one whose grouping key is `keep`; the keys deleted.

    For a job that checks one thing at a time (the hourly drift monitor checks the champion's reference
    dataset): after pushing the current group, the others are what earlier references left behind.
    """
    wanted = {str(k): str(v) for k, v in keep.items()}
    retired = [key for key in pushed_groups(url, job, timeout) if key != wanted]
    for key in retired:
        delete_group(url, job, key, timeout)
    return retired

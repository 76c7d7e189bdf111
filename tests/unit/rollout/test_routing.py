"""Client buckets: sticky per key, nested across shares, another rollout another cohort."""

from __future__ import annotations

from lvm_core.rollout.routing import bucket


def test_client_buckets_are_sticky_and_nested():
    keys = [f"user-{i}" for i in range(4000)]
    places = [bucket(k, "m/v7") for k in keys]
    assert places == [bucket(k, "m/v7") for k in keys]
    in5 = {k for k, p in zip(keys, places) if p < 0.05}
    in20 = {k for k, p in zip(keys, places) if p < 0.20}
    assert in5 <= in20 and 0.03 < len(in5) / 4000 < 0.07 and 0.17 < len(in20) / 4000 < 0.23
    assert [bucket(k, "m/v8") for k in keys[:50]] != places[:50]  # another rollout, another cohort

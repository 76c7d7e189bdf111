"""Benchmark: how often the staged rollout's decision is right, on article-clustered traffic (an A/A harness).

Run from the repository root (after `make run`, which builds the sample dataset it reads):

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_canary.py [--dataset lvm-data/datasets/<id>] [--rollouts 200]
        [--clients-per-second 5] [--session-windows 20] [--feedback 1.0] [--json out.json]

What runs is the product's decision code, not a copy: every simulated request and feedback goes through the
service's `LiveStats` (per-client counters, the p99 bound), its snapshot is read back as the rollout flow
reads it (`VersionStats.from_dict`), routing is `lvm_core.rollout.routing.bucket` (sticky client keys), and
each step is a `StepWatch` over `decide` with the shipped `Thresholds`, plan 5% → 20% → 100%, a look every
30 s, a decision every 600 s and at most 3 extra periods — the defaults of `lvm rollout start`.

Traffic (rates stated, all in simulated time): clients arrive at `--clients-per-second` (Poisson); each reads
one article of the sample, `--session-windows` consecutive windows from a random place, one request every 2 s;
`--feedback` of the predictions get their true next chunk back. The champion's online cosine on a window is
the real cosine of the mean-of-context prediction with the true next chunk on the sample (what the shipped
models predict today; between-article sd of the mean ≈ 0.06, within ≈ 0.13). Server errors: 0.1% of requests
of either version; latency: the same log-normal (median 1.5 ms) for both.

Scenarios: an identical challenger (A/A), and one whose every cosine is 0.03 lower. Targets: A/A promoted in
≥ 95% of rollouts; 0.03 worse rolled back in ≥ 95%. Baseline, on the same simulated traffic: the previous rule
(roll back when the champion's mean cosine exceeds the challenger's by 0.02 once both have 30 feedbacks,
checked at every look; step at the period's end). The median number of requests to the final decision is
printed for each. Exit status 1 when a target fails.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from scipy.stats import binomtest  # noqa: E402

from lvm_core.rollout.decision import StepWatch, Thresholds  # noqa: E402
from lvm_core.rollout.routing import bucket  # noqa: E402
from lvm_core.rollout.state import DEFAULT_PLAN  # noqa: E402
from lvm_core.rollout.stats import VersionStats  # noqa: E402
from lvm_core.serving.live_stats import LiveStats  # noqa: E402

TARGET = 0.95
STEP_SECONDS = 600.0
CHECK_SECONDS = 30.0
MAX_HOLDS = 3
REQUEST_INTERVAL_S = 2.0
ERROR_RATE = 0.001
OLD_MIN_FEEDBACK, OLD_MAX_DROP = 30, 0.02


def window_cosines(dataset: Path) -> list[np.ndarray]:
    """Per article, the cosine of each window's mean-of-context prediction with its true next chunk."""
    from lvm_core.data.build.load import load_dataset
    from lvm_core.data.windows import SequenceSet, gather

    ds = load_dataset(dataset, require_ready=False)
    seqs = SequenceSet.concat([s for s in ds.sequences.values() if len(s)])
    ctx, target = gather(ds.vectors, seqs, np.arange(len(seqs)))
    mean = ctx.astype(np.float64).mean(axis=1)
    cos = (mean * target).sum(axis=1) / (np.linalg.norm(mean, axis=1) * np.linalg.norm(target, axis=1))
    articles = np.asarray(seqs.article_ids)
    return [cos[articles == a] for a in np.unique(articles)]


def default_dataset() -> Path:
    found = sorted((REPO / "lvm-data" / "datasets").glob("*/manifest.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit("no dataset under lvm-data/datasets: run `make run` first, or give --dataset")
    return found[-1].parent


@dataclass
class Client:
    key: str
    cosines: np.ndarray  # the windows this client will read, in order
    sent: int = 0


@dataclass
class Outcome:
    action: str  # promote | rollback
    requests: int
    seconds: float


class Traffic:
    """Clients arriving, each reading windows of one article; one request per client every 2 s."""

    def __init__(self, articles: list[np.ndarray], rng: np.random.Generator, clients_per_second: float,
                 session_windows: int, feedback: float, challenger_shift: float):
        self.articles, self.rng = articles, rng
        self.rate, self.session, self.feedback, self.shift = clients_per_second, session_windows, feedback, challenger_shift
        self.active: list[Client] = []
        self.next_id = 0

    def arrive(self, seconds: float) -> None:
        for _ in range(self.rng.poisson(self.rate * seconds)):
            art = self.articles[self.rng.integers(len(self.articles))]
            start = int(self.rng.integers(max(1, len(art) - self.session + 1)))
            self.active.append(Client(f"client-{self.next_id}", art[start:start + self.session]))
            self.next_id += 1

    def tick(self, seconds: float, route: Any, sink: Any) -> int:
        """Each active client sends its requests of the next `seconds`; `sink(version, cos|None, client, err, lat)`."""
        self.arrive(seconds)
        per_client = int(seconds / REQUEST_INTERVAL_S)
        n = 0
        still: list[Client] = []
        for c in self.active:
            version = route(c.key)
            take = c.cosines[c.sent:c.sent + per_client]
            c.sent += len(take)
            lat = np.exp(self.rng.normal(np.log(0.0015), 0.3, len(take)))
            err = self.rng.random(len(take)) < ERROR_RATE
            fb = self.rng.random(len(take)) < self.feedback
            shift = self.shift if version == 2 else 0.0
            for i in range(len(take)):
                sink(version, float(take[i]) - shift if fb[i] and not err[i] else None, c.key, bool(err[i]),
                     float(lat[i]))
            n += len(take)
            if c.sent < len(c.cosines):
                still.append(c)
        self.active = still
        return n


def run_rollout(articles: list[np.ndarray], seed: int, shift: float, args: argparse.Namespace,
                rule: str) -> Outcome:
    """One simulated rollout of challenger v2 against champion v1, decided by `rule` ("sequential" | "old")."""
    rng = np.random.default_rng(seed)
    traffic = Traffic(articles, rng, args.clients_per_second, args.session_windows, args.feedback, shift)
    thresholds = Thresholds()
    live = LiveStats()
    plan = DEFAULT_PLAN
    share, step, t, requests = plan[0], 0, 0.0, 0
    salt = f"bench/v2/{seed}"
    live.reset(f"step{step}")
    watch = StepWatch(thresholds, share, plan, STEP_SECONDS, MAX_HOLDS, started=0.0)

    def route(key: str) -> int:
        return 2 if bucket(key, salt) < share else 1

    def sink(version: int, cos: float | None, key: str, err: bool, lat: float) -> None:
        live.record_request(str(version), lat, 500 if err else 200, client=key)
        if cos is not None:
            live.record_cosine(str(version), cos, client=key)

    traffic.arrive(60.0)  # clients already reading when the rollout starts
    while True:
        requests += traffic.tick(CHECK_SECONDS, route, sink)
        t += CHECK_SECONDS
        snap = live.snapshot()["versions"]
        champion = VersionStats.from_dict(1, snap.get("1", {}))
        challenger = VersionStats.from_dict(2, snap.get("2", {}))
        action = _old_rule(champion, challenger, watch, t) if rule == "old" else _sequential(watch, champion,
                                                                                         challenger, t)
        if action is None or action == "hold":
            continue
        if action in ("rollback", "promote"):
            return Outcome(action, requests, t)
        step += 1
        share = plan[step]
        live.reset(f"step{step}")
        watch = StepWatch(thresholds, share, plan, STEP_SECONDS, MAX_HOLDS, started=t)


def _sequential(watch: StepWatch, champion: VersionStats, challenger: VersionStats, t: float) -> str | None:
    d = watch.look(champion, challenger, t)
    return None if d is None else d.action


def _old_rule(champion: VersionStats, challenger: VersionStats, watch: StepWatch, t: float) -> str | None:
    """The rule this replaced: a fixed 0.02 drop after 30 feedbacks each, at every look; step at the period end."""
    enough = champion.cosine_count >= OLD_MIN_FEEDBACK and challenger.cosine_count >= OLD_MIN_FEEDBACK
    if enough and (champion.cosine_mean or 0.0) - (challenger.cosine_mean or 0.0) > OLD_MAX_DROP:
        return "rollback"
    if t < watch.deadline:
        return None
    if not enough:
        watch.holds += 1
        return "rollback" if watch.holds > MAX_HOLDS else "hold"
    return "promote" if watch.share >= watch.plan[-2] else "step"


def scenario(articles: list[np.ndarray], shift: float, rule: str, args: argparse.Namespace) -> dict[str, Any]:
    n = args.rollouts if rule == "sequential" else args.baseline_rollouts
    outcomes = [run_rollout(articles, seed, shift, args, rule) for seed in range(n)]
    promoted = sum(o.action == "promote" for o in outcomes)
    return {"rule": rule, "shift": shift, "rollouts": len(outcomes), "promoted": promoted,
            "rolled_back": len(outcomes) - promoted,
            "median_requests": float(np.median([o.requests for o in outcomes])),
            "median_minutes": float(np.median([o.seconds for o in outcomes])) / 60.0}


def wilson_lower(k: int, n: int) -> float:
    """Lower end of the 95% Wilson interval of k successes in n."""
    return float(binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson").low)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, default=None, help="dataset folder [default: newest in lvm-data/datasets]")
    ap.add_argument("--rollouts", type=int, default=200, help="simulated rollouts per scenario, sequential rule")
    ap.add_argument("--baseline-rollouts", type=int, default=100, help="simulated rollouts per scenario, old rule")
    ap.add_argument("--clients-per-second", type=float, default=5.0, help="new client sessions per second")
    ap.add_argument("--session-windows", type=int, default=20, help="windows (requests) each client reads")
    ap.add_argument("--feedback", type=float, default=1.0, help="share of predictions that get feedback")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    dataset = args.dataset or default_dataset()
    articles = [a for a in window_cosines(dataset) if len(a) >= 2]
    print(f"dataset {dataset}: {len(articles)} articles, {sum(len(a) for a in articles)} windows; "
          f"{args.clients_per_second} clients/s × {args.session_windows} windows, one request per "
          f"{REQUEST_INTERVAL_S:.0f} s (~{args.clients_per_second * args.session_windows:.0f} req/s at steady state), "
          f"feedback {args.feedback:.0%}")
    results = []
    failed = False
    for shift, goal in ((0.0, "promote"), (0.03, "rollback")):
        for rule in ("sequential", "old"):
            t0 = time.perf_counter()
            r = scenario(articles, shift, rule, args)
            right = r["promoted"] if goal == "promote" else r["rolled_back"]
            r["right_rate"], r["right_rate_lower95"] = right / r["rollouts"], wilson_lower(right, r["rollouts"])
            r["seconds"] = time.perf_counter() - t0
            results.append(r)
            verdict = ""
            if rule == "sequential":
                ok = r["right_rate"] >= TARGET
                failed |= not ok
                verdict = f"  target ≥ {TARGET:.0%}: {'PASS' if ok else 'FAIL'}"
            label = "identical (A/A)" if shift == 0 else f"{shift} worse"
            done = "promoted" if goal == "promote" else "rolled back"
            print(f"{label:>16} {rule:>10}: {done} {r['right_rate']:.1%} (Wilson 95% lower {r['right_rate_lower95']:.1%})"
                  f" of {r['rollouts']}; median {r['median_requests']:.0f} requests / {r['median_minutes']:.0f} min "
                  f"to the decision{verdict}")
    by = {(r["shift"], r["rule"]): r for r in results}
    for shift in (0.0, 0.03):
        new, old = by[(shift, "sequential")], by[(shift, "old")]
        print(f"shift {shift}: right-decision rate sequential / old = {new['right_rate']:.3f} / "
              f"{old['right_rate']:.3f} = {new['right_rate'] / max(old['right_rate'], 1e-9):.2f}")
    if args.json:
        args.json.write_text(json.dumps({"dataset": str(dataset), "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

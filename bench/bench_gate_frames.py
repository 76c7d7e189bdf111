"""Memory and time of the data gates' frames at two dataset sizes: per-chunk growth against a target.

Writes two synthetic dataset folders (tests/fixtures/gate_dataset.py, texts lengthened to ~580 characters),
then builds the gate frames of each in a fresh process (`build_gate_frames`, `tracemalloc` peak, peak RSS)
and, with --gates, runs the whole checkpoint without Data Docs. Target: peak RSS grows by at most
`--max-bytes-per-chunk` per added chunk (default 256; the frames before held ~1.3 KB per chunk).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = """
import json, sys, time, tracemalloc
from pathlib import Path
from expectations.frames.build import build_gate_frames
from expectations.runner import run_pre_training_gates
root, gates = Path(sys.argv[1]), sys.argv[2] == "1"


def peak_mb():  # VmHWM: this process's own peak (ru_maxrss would carry the parent's across exec)
    line = next(x for x in open("/proc/self/status") if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024



tracemalloc.start(); t = time.perf_counter(); frames = build_gate_frames(root, None)
out = {"frames_s": time.perf_counter() - t, "tracemalloc_mb": tracemalloc.get_traced_memory()[1] / 2**20,
       "frame_rows": int(sum(len(f) for f in frames.values()))}
tracemalloc.stop(); del frames
out["frames_maxrss_mb"] = peak_mb()
if gates:
    t = time.perf_counter(); report = run_pre_training_gates(root, docs_dir=root.parent / "gx", data_docs=False)
    out.update(gates_s=time.perf_counter() - t, passed=report.passed)
out["maxrss_mb"] = peak_mb()
print(json.dumps(out))
"""


def make(root: Path, n_articles: int) -> int:
    """A valid dataset folder of `n_articles` x 10 chunks with long texts; its chunk count."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sys.path.insert(0, str(ROOT))
    from tests.fixtures.gate_dataset import make_dataset

    make_dataset(root, n_articles=n_articles)
    path = root / "chunks.parquet"
    table = pq.read_table(path)
    longer = pc.binary_repeat(table["text"], 9).cast(pa.string())
    pq.write_table(table.set_column(table.schema.get_field_index("text"), table.schema.field("text"), longer), path)
    return table.num_rows


def measure(root: Path, gates: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), "1" if gates else "0"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--articles", type=int, nargs=2, default=[5_004, 40_008], help="articles of the two folders")
    ap.add_argument("--gates", action="store_true", help="also time the GX checkpoint (no Data Docs)")
    ap.add_argument("--max-bytes-per-chunk", type=float, default=256.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-gates-") as tmp:
        rows = []
        for n in args.articles:
            chunks = make(Path(tmp) / f"a{n}" / "dataset", n)
            rows.append((chunks, measure(Path(tmp) / f"a{n}" / "dataset", args.gates)))
            print(f"{chunks:>9,} chunks: {json.dumps(rows[-1][1])}")
    (c0, m0), (c1, m1) = rows
    slope = (m1["frames_maxrss_mb"] - m0["frames_maxrss_mb"]) * 2**20 / (c1 - c0)
    traced = (m1["tracemalloc_mb"] - m0["tracemalloc_mb"]) * 2**20 / (c1 - c0)
    ok = slope <= args.max_bytes_per_chunk
    if args.gates:
        whole = (m1["maxrss_mb"] - m0["maxrss_mb"]) * 2**20 / (c1 - c0)
        print(f"frames, then the checkpoint: peak RSS +{whole:.0f} B per added chunk")
    print(f"frames: peak RSS +{slope:.0f} B per added chunk (tracemalloc +{traced:.0f} B); target <= "
          f"{args.max_bytes_per_chunk:.0f}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""write_report: Markdown + self-contained HTML with plots, gates, summary and (escaped) neighbour tables."""

from __future__ import annotations

import base64
import hashlib
import re

import numpy as np
import pytest

from lvm_core.data.windows import build_windows
from lvm_core.evaluation.evaluate import evaluate_predictors
from lvm_core.evaluation.model_card.card import render_model_card
from lvm_core.evaluation.report import REPORT_HTML, REPORT_MD, ReportError, write_report
from lvm_core.evaluation.result import EvaluationResult
from lvm_core.io.vectors import l2_normalize

DIM = 16
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result() -> EvaluationResult:
    rng = np.random.default_rng(0)
    vecs, aids, cidx, texts = [], [], [], []
    for a, n in enumerate((9, 8, 10, 7, 9, 8)):
        walk = rng.normal(size=DIM)
        for i in range(n):
            walk = walk + 0.6 * rng.normal(size=DIM)
            vecs.append(walk.copy())
            aids.append(10 + a)
            cidx.append(i)
            texts.append(f"Article {a} chunk {i} <script>alert('x')</script> a|b & c")
    v = l2_normalize(np.asarray(vecs, np.float32), dtype=None)
    aids = np.array(aids, np.int64)
    cidx = np.array(cidx, np.int32)
    hashes = np.array([hashlib.sha1(t.encode()).hexdigest() for t in texts])
    seqs = build_windows(aids, cidx, context_len=3)
    splits = {
        "val": seqs.subset(np.isin(seqs.article_ids, [10, 11, 12])),
        "ood": seqs.subset(np.isin(seqs.article_ids, [13, 14, 15])),
    }
    preds = {
        "lvm-amn": lambda ctx: l2_normalize(np.einsum("bcd,c->bd", ctx, [0.2, 0.3, 0.5]), dtype=None),
        "copy_last": lambda ctx: ctx[:, -1],
        "context_mean": lambda ctx: l2_normalize(ctx.mean(axis=1), dtype=None),
    }
    bins = {10: 0, 11: 1, 12: 2, 13: 0, 14: 1, 15: 2}
    return evaluate_predictors(preds, v, splits, aids, cidx, hashes, np.array(texts, dtype=object), article_bins=bins)


CONTEXT = {
    "snapshot_id": "enwiki-sample-abc123",
    "model": "lvm-amn v3",
    "run_id": "0123456789abcdef",
    "gates": [
        {"name": "val_cosine", "passed": True, "value": 0.61, "threshold": 0.55},
        {
            "name": "beats_best_baseline",
            "passed": False,
            "value": {"baseline": "context_mean", "split": "test", "delta": 0.003, "low": -0.002, "high": 0.008},
            "threshold": 0.0,
        },
    ],
}


def test_report_files_tables_and_images(result, tmp_path):
    out = tmp_path / "report"
    paths = write_report(result, out, "Evaluation <of> LVM", CONTEXT)
    assert paths["markdown"] == out / REPORT_MD and paths["html"] == out / REPORT_HTML
    for key in ("offset_sweep", "metrics", "coherence_bins"):
        assert paths[key].read_bytes().startswith(PNG_MAGIC)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temp files left behind

    html_text = paths["html"].read_text()
    md = paths["markdown"].read_text()
    # self-contained HTML: the three plots embedded as decodable PNGs
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html_text)
    assert len(images) == 3
    assert all(base64.b64decode(b).startswith(PNG_MAGIC) for b in images)
    # the Markdown references the PNGs beside it
    for key in ("offset_sweep", "metrics", "coherence_bins"):
        assert f"]({paths[key].name})" in md
    # tables: run context, gates with their outcome, summary rows for each predictor × split
    assert html_text.count("<table>") >= 6
    assert "enwiki-sample-abc123" in html_text and "0123456789abcdef" in md
    assert re.search(r"<td>val_cosine</td><td class=\"pass\">PASS</td><td>0.6100</td><td>0.5500</td>", html_text)
    assert re.search(r"<td>beats_best_baseline</td><td class=\"fail\">FAIL</td>", html_text)
    assert "Δ +0.0030 [\u22120.0020, +0.0080] vs context_mean (test)" in md
    assert "Failed gates: beats_best_baseline." in md
    cos = result.metrics["copy_last"]["ood"]["cosine"]
    lo, hi = result.interval("copy_last", "ood", "cosine")
    cell = f"{cos:.4f} [{lo:.4f}, {hi:.4f}]".replace("-", "\u2212")  # numbers carry their bootstrap interval
    assert (
        f"<td>copy_last</td><td>ood</td><td>{result.metrics['copy_last']['ood']['n_windows']}</td><td>{cell}</td>"
        in html_text
    )
    assert f"| copy_last | ood | {result.metrics['copy_last']['ood']['n_windows']} | {cell} |" in md
    name, val = result.best_baseline("val")
    assert f"vs {name} (best trivial baseline on val) {val:.4f} [" in md
    assert "oracle R@5" not in md  # the self-query oracle cannot fail: no column
    # deltas beside each baseline, naming the split; this result has no test split, so val is reported
    d = result.delta(name, "val")
    sign = lambda x: f"{x:+.4f}".replace("-", "\u2212")  # noqa: E731
    delta_text = f"Δ {sign(d['delta'])} [{sign(d['low'])}, {sign(d['high'])}]"
    assert "val (reported; primary comparison): lvm-amn cosine" in md and delta_text in md
    assert f"| val | {name} | {delta_text} |" in md and f"<td>val</td><td>{name}</td><td>{delta_text}</td>" in html_text
    assert "Reported split: val (this dataset has no test split)" in md and "cluster-robust t intervals" in md
    # neighbour table with escaped chunk text: no raw markup from the data reaches the page
    assert "<script>" not in html_text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; a|b &amp; c" in html_text
    assert "Evaluation &lt;of&gt; LVM" in html_text
    assert "a\\|b &amp; c" in md and "<script>" not in md  # pipes and markup escaped in Markdown tables
    assert "Nearest chunks — val (lvm-amn)" in md
    # offset sweep table has k = -3..+3
    assert "k=-3" in md and "k=0 (target)" in md and "k=+3" in md


def test_report_without_bins_or_gates_and_rewrites(result, tmp_path):
    bare = EvaluationResult.from_dict(result.to_dict())
    bare.metrics_by_bin = {}
    bare.bin_counts = {}
    paths = write_report(bare, tmp_path, "plain")
    assert "coherence_bins" not in paths and not (tmp_path / "coherence_bins.png").exists()
    html_text = paths["html"].read_text()
    assert "Gates" not in html_text and "offset sweep" in html_text.lower()
    first = paths["markdown"].read_text()
    paths2 = write_report(
        bare, tmp_path, "plain again", {"gates": {"oracle_r@5": {"passed": True, "value": 1.0, "threshold": 0.97}}}
    )
    assert paths2["markdown"].read_text() != first
    assert "oracle_r@5" in paths2["html"].read_text()


def test_report_bad_inputs(result, tmp_path):
    with pytest.raises(ReportError, match="EvaluationResult"):
        write_report({"metrics": {}}, tmp_path, "x")  # type: ignore[arg-type]
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ReportError, match="not a folder"):
        write_report(result, f, "x")


def test_model_card_shows_intervals_deltas_and_epoch_zero(result):
    gate = {"passed": False, "value": {"baseline": "copy_last", "split": "val", "delta": -0.01, "low": -0.02,
                                        "high": -0.001}, "threshold": 0.0}
    card = render_model_card({
        "name": "lvm-amn",
        "training": {"epochs_run": 3, "best_epoch": 0},
        "metrics": result.to_dict(),
        "gates": {"beats_best_baseline": gate},
    })
    sign = lambda x: f"{x:+.4f}".replace("-", "\u2212")  # noqa: E731
    cos = result.metrics["lvm-amn"]["val"]["cosine"]
    lo, hi = result.interval("lvm-amn", "val")
    d = result.delta("copy_last", "val")
    assert f"{cos:.4f} [{lo:.4f}, {hi:.4f}]" in card
    assert f"Δ {sign(d['delta'])} [{sign(d['low'])}, {sign(d['high'])}]" in card
    assert "| split |" not in card and "val Δ model − baseline" in card and "ood Δ model − baseline" in card
    assert "Reported split: val (no test split)" in card
    assert "- val (reported; primary comparison): the model (" in card and "best trivial baseline on val" in card
    assert "no training epoch beat the untrained model" in card
    assert "Δ \u22120.0100 [\u22120.0200, \u22120.0010] vs copy_last (val)" in card
    plain = render_model_card({"training": {"best_epoch": 2}, "metrics": {"m": {"val": {"cosine": 0.5}}}})
    assert "untrained model" not in plain and "[" not in plain.split("## Metrics beside baselines")[1]


def test_report_shows_the_crossval_with_its_learning_curve(result, tmp_path):
    source = tmp_path / "crossval-10x3"
    source.mkdir()
    (source / "learning_curve.png").write_bytes(PNG_MAGIC + b"curve")
    facts = {"text": "Grouped 10-fold cross-validation by article. Beat the best trivial baseline: amn.",
             "headers": ["predictor", "Δ cosine"], "rows": [["amn", "+0.0066 [+0.0052, +0.0080]"]],
             "curve_arch": "amn", "curve_headers": ["training articles per fold", "Δ cosine"],
             "curve_rows": [["19.6", "+0.0000 [-0.0010, +0.0010]"]], "source": str(source)}
    paths = write_report(result, tmp_path / "report", "Evaluation", {**CONTEXT, "crossval": facts})
    md = paths["markdown"].read_text()
    assert "## Cross-validated comparison of the architectures" in md and "Beat the best trivial baseline: amn" in md
    assert "| amn | +0.0066 [+0.0052, +0.0080] |" in md and "## Learning curve (amn)" in md
    assert "](crossval_learning_curve.png)" in md
    assert (tmp_path / "report" / "crossval_learning_curve.png").read_bytes() == PNG_MAGIC + b"curve"
    assert "source" not in md.split("## Gates")[0]  # not dumped into the run table

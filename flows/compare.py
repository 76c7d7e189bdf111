"""Flow: every architecture beside the trivial baselines — grouped cross-validation by article (default),
or trained once on the fixed split and registered."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.infra.hooks import RUN_HOOKS
from flows.train_model import train_model
from lvm_core.contracts.layout import default_data_dir, models_dir
from lvm_core.contracts.manifest import ood_is_shift
from lvm_core.data.build.load import Dataset, load_dataset
from lvm_core.evaluation.compare import add_intervals, comparison_markdown, comparison_row, crossval_document
from lvm_core.evaluation.crossval import CROSSVAL_CURVE_PNG, CROSSVAL_JSON, CrossValConfig, crossval_dir, pooled_windows
from lvm_core.evaluation.learning_curve import plot_curve
from lvm_core.io.storage import write_json
from lvm_core.models.baselines.collection import fit_baselines
from lvm_core.models.builder import build_model, count_parameters
from lvm_core.models.config import ModelConfig
from lvm_core.tracking.references import load_registered_model
from tasks.common import publish_markdown
from tasks.train import cross_validate

Arch = Literal["amn", "amn_mix", "gru", "lstm", "transformer"]


@flow(name="compare_architectures", flow_run_name="compare-{data}", log_prints=True, **RUN_HOOKS)
def compare_architectures(
    data: str,
    archs: list[Arch] = ["amn", "amn_mix", "gru", "lstm", "transformer"],  # noqa: B006 (Prefect parameter default)
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    data_dir: str | None = None,
    folds: int = 10,
    seeds: int = 3,
    curve_fractions: list[float] = [0.25, 0.5],  # noqa: B006 (Prefect parameter default)
    jobs: int = 2,
    split_seed: int = 0,
) -> dict[str, Any]:
    """Compare every architecture beside the trivial baselines.

    With `folds` >= 3 (the default, 10): grouped cross-validation by article (`lvm_core.evaluation.crossval`):
    every article is test once, selection on the next fold, `seeds` training seeds, pooled per-article scores,
    paired cluster-t intervals with Holm's correction, within-article R@1/MRR, and a learning curve of the best
    architecture on `curve_fractions` of the training articles; nothing is registered. `jobs` trainings run at
    once. With `folds` = 0: the single fixed split; each architecture is trained with `lvm train`'s flow and
    registered as `lvm-<arch>`, and the table adds parameters, ood cosine and latency per batch of 64.
    `epochs`, `batch_size` and `lr` default to each mode's own defaults.
    """
    root = Path(data_dir) if data_dir else default_data_dir()
    ds = load_dataset(Path(data))
    if folds:
        return _cross_validate(ds, root, list(archs), folds, seeds, epochs, batch_size, lr, curve_fractions, jobs,
                               split_seed)
    epochs, batch_size, lr = epochs or 20, batch_size or 64, lr or 1e-4
    rows = []
    for name, b in fit_baselines(ds.vectors, ds.sequences["train"]).items():
        rows.append(comparison_row(name, "baseline", b, ds.vectors, ds.sequences))
    for arch in archs:
        t0 = time.perf_counter()
        trained = train_model(data=data, arch=arch, epochs=epochs, batch_size=batch_size, lr=lr, data_dir=str(root))
        seconds = time.perf_counter() - t0
        model = load_registered_model(trained["uri"], expected_fingerprint=ds.fingerprint)
        params = count_parameters(build_model(ModelConfig(**model.config.model_dump())))
        rows.append(comparison_row(f"{arch} ({trained['uri']})", "model", model, ds.vectors, ds.sequences,
                                   params=params, train_seconds=seconds))
    split = "test" if len(ds.sequences.get("test", [])) else "val"  # datasets from before the test split: val
    rows = add_intervals(rows, ds.sequences, split=split)
    dataset_id = ds.manifest.dataset_id
    md = comparison_markdown(rows, f"Architectures on {dataset_id} ({epochs} epochs max, early stopping and "
                                   f"selection on val; {split} reported with 95% article-bootstrap intervals)")
    out = models_dir(root) / "comparisons" / dataset_id
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(md)
    write_json(out / "comparison.json", rows)
    publish_markdown(md, f"compare-{dataset_id}", "Architecture comparison beside the trivial baselines")
    get_run_logger().info("comparison written to %s", out / "comparison.md")
    return {"rows": rows, "markdown": str(out / "comparison.md")}


def _cross_validate(ds: Dataset, root: Path, archs: list[str], folds: int, seeds: int, epochs: int | None,
                    batch_size: int | None, lr: float | None, curve_fractions: list[float], jobs: int,
                    split_seed: int) -> dict[str, Any]:
    """The cross-validation mode of `compare_architectures`: table, learning curve (table and PNG), JSON."""
    cfg = CrossValConfig(folds=folds, seeds=seeds, archs=tuple(archs), curve_fractions=tuple(curve_fractions),
                         jobs=jobs, split_seed=split_seed)
    cfg = replace(cfg, epochs=epochs or cfg.epochs, batch_size=batch_size or cfg.batch_size, lr=lr or cfg.lr)
    pooled = pooled_windows(ds.sequences, ood_is_shift(ds.manifest.splits.model_dump()))
    dataset_id = ds.manifest.dataset_id
    res = cross_validate(dataset_id, ds.vectors, pooled, ds.article_ids, ds.text_hash, cfg)
    out = crossval_dir(root, dataset_id, folds, seeds)
    out.mkdir(parents=True, exist_ok=True)
    md = crossval_document(res, f"Architectures on {dataset_id}: grouped {folds}-fold cross-validation by article")
    png = plot_curve(res.curve, res.curve_arch, out / CROSSVAL_CURVE_PNG) if res.curve and res.curve_arch else None
    (out / "comparison.md").write_text(md)
    write_json(out / CROSSVAL_JSON, res.to_dict())
    publish_markdown(md, f"crossval-{dataset_id}", "Grouped cross-validation of the architectures beside the baselines")
    get_run_logger().info("cross-validation written to %s", out / "comparison.md")
    return {"rows": res.rows, "curve": res.curve, "curve_arch": res.curve_arch, "markdown": str(out / "comparison.md"),
            "learning_curve_png": str(png) if png else None, "seconds": res.seconds, "crossval": True}

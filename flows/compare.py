"""Flow: train every architecture on one dataset and tabulate them beside the trivial baselines."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger

from flows.infra.hooks import RUN_HOOKS
from flows.train_model import train_model
from lvm_core.contracts.layout import default_data_dir, models_dir
from lvm_core.data.build.load import load_dataset
from lvm_core.evaluation.compare import add_intervals, comparison_markdown, comparison_row
from lvm_core.io.storage import write_json
from lvm_core.models.baselines.collection import fit_baselines
from lvm_core.models.builder import build_model, count_parameters
from lvm_core.models.config import ModelConfig
from lvm_core.tracking.references import load_registered_model
from tasks.common import publish_markdown

Arch = Literal["amn", "amn_mix", "gru", "lstm", "transformer"]


@flow(name="compare_architectures", flow_run_name="compare-{data}", log_prints=True, **RUN_HOOKS)
def compare_architectures(
    data: str,
    archs: list[Arch] = ["amn", "amn_mix", "gru", "lstm", "transformer"],  # noqa: B006 (Prefect parameter default)
    epochs: int = 20,
    batch_size: int = 64,
    lr: float = 1e-4,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Each architecture is trained (and registered as `lvm-<arch>`) on the same dataset; the table gives
    parameters, val/ood cosine, |ood-val|, training time and latency per batch of 64, beside the baselines."""
    root = Path(data_dir) if data_dir else default_data_dir()
    ds = load_dataset(Path(data))
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

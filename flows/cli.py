"""`lvm`: build datasets, train, evaluate, promote and run the whole pipeline from a terminal.

Every command runs the same Prefect flow a deployment runs, so runs show up in the Prefect UI.
Errors a user can fix print one line and exit 1; nothing half-written is published.
SIGINT (Ctrl-C) and SIGTERM stop a command cleanly: the flow run ends Crashed, its slots are released,
the temporary Prefect API server stops, one line is printed and the exit code is 130 / 143
(flows/signals.py); a second signal forces the exit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

import flows  # noqa: F401  (offline environment defaults)
from flows import signals


class _Lvm(typer.Typer):
    """The `lvm` app; called as a program (the `lvm` script, `python -m flows.cli`) it stops cleanly on signals."""

    def __call__(self, *args, **kwargs):
        signals.install()
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as exc:
            if signals.received() is not None and exc.code not in (0, None):
                _stopped(signals.received())
            raise
        except BaseException as exc:
            signum = signals.received() or signals.stop_signal_of(exc)
            if signum is None:
                raise
            _stopped(signum)
        finally:
            signals.mark_exiting()


def _stopped(signum: int) -> None:
    """One line and the conventional exit code (130 SIGINT, 143 SIGTERM); `atexit` stops the temporary API server."""
    code = signals.exit_code(signum)
    err.print(f"[bold red]interrupted:[/] {signals.signal_name(signum)}; the run was stopped and nothing half-written "
              f"was published (exit {code})", highlight=False, soft_wrap=True)
    signals.mark_exiting()
    signals.leave(code)


app = _Lvm(
    name="lvm",
    help="Train Language Vector Models on Wikipedia: build gated datasets, train, evaluate, promote.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False)
err = Console(stderr=True)

DataDirOpt = Annotated[
    Optional[Path],
    typer.Option("--data-dir", envvar="LVM_DATA_DIR", help="Data folder for datasets, cache, models and the MLflow DB [default: ./lvm-data]"),
]


def _data_dir(value: Optional[Path]) -> str:
    return str(value if value is not None else Path("lvm-data"))


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input or a failed gate: one line, exit 1, no traceback."""
    import pydantic

    from lvm_core.contracts import DataContractError
    from lvm_core.data.build import DatasetNotReadyError
    from lvm_core.contracts.gates import GateFailedError

    errors: list[type[BaseException]] = [
        DataContractError, DatasetNotReadyError, GateFailedError, pydantic.ValidationError, ValueError, FileNotFoundError,
    ]
    for mod, name in [
        ("lvm_core.data.ingest", "IngestError"),
        ("lvm_core.data.embedding", "FingerprintMismatchError"),
        ("lvm_core.data.embedding", "EncoderLoadError"),
        ("lvm_core.data.npz_compat", "NpzFormatError"),
        ("lvm_core.tracking", "ModelNotFoundError"),
        ("lvm_core.tracking", "RegistryError"),
        ("lvm_core.snapshots", "SnapshotSourceError"),
        ("lvm_core.train", "CheckpointError"),
        ("tasks.train", "TrainingDivergedError"),
    ]:
        try:
            errors.append(getattr(__import__(mod, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _run(fn, *args, **kwargs):
    """Call a flow or function; turn user errors into a one-line message and exit code 1."""
    try:
        return fn(*args, **kwargs)
    except _user_errors() as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if exc.__class__.__name__ == "ValidationError":
            msg = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())  # type: ignore[attr-defined]
        err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None


def _run_flow(fn, *args, **kwargs):
    """`_run` for commands that run Prefect flows: the temporary API server (no PREFECT_API_URL set) is started
    in its own process group, so a terminal's Ctrl-C reaches only this process, which still needs the server to
    report the run Crashed and release its slots."""
    signals.isolate_temporary_server()
    return _run(fn, *args, **kwargs)


def _ranges_or_none(v: Optional[str]) -> Optional[str]:
    return v.strip() if v else None


OnDuplicateOpt = Annotated[
    str,
    typer.Option("--on-duplicate", help="Parquet/JSONL rows repeating an id with a different text: error (fail), "
                 "or keep the first / last row. Identical repeats are always dropped and counted"),
]


WorkersOpt = Annotated[
    Optional[int],
    typer.Option("--workers", envvar="LVM_WORKERS", help="Run the shards on a temporary local Dask cluster of N "
                 "single-threaded worker processes [default: in this process, one shard at a time]"),
]
DaskAddressOpt = Annotated[
    Optional[str],
    typer.Option("--dask-address", envvar="LVM_DASK_ADDRESS", help="Run the shards on an existing Dask cluster, "
                 "e.g. tcp://dask-scheduler:8786 (its workers must see the data folder at the same path)"),
]


@app.command()
def build(
    source: Annotated[str, typer.Option(help="'sample' (embedded enwiki excerpt), a *-pages-articles*.xml[.bz2] dump, or a .parquet/.jsonl with id,title,text")] = "sample",
    data_dir: DataDirOpt = None,
    limit_articles: Annotated[Optional[int], typer.Option(help="Only the first N articles (quick runs)")] = None,
    snapshot_id: Annotated[Optional[str], typer.Option(help="Override the snapshot id derived from the source name/digest")] = None,
    encoder: Annotated[Optional[str], typer.Option(help="sentence-transformers model name or path, optionally @BACKEND: auto (CUDA fp16 when present, else fp32), torch, torch-fp16, onnx-int8 (CPU, ~4x faster, refused below mean cosine 0.99 to fp32), e.g. all-MiniLM-L6-v2@onnx-int8 [default: packaged all-MiniLM-L6-v2, auto]")] = None,
    vector_dtype: Annotated[str, typer.Option(help="Vectors on disk: float32, or float16 (half the disk and page cache; computed in float32)")] = "float32",
    context_len: Annotated[int, typer.Option(help="Chunks of context per training sequence")] = 5,
    min_words: Annotated[int, typer.Option(help="Minimum words per chunk")] = 40,
    max_words: Annotated[int, typer.Option(help="Maximum words per chunk")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the stratified split")] = 1234,
    fractions: Annotated[str, typer.Option(help="train,val,test,ood article fractions (val selects, test reports; three values = train,val,ood with no test split)")] = "0.7,0.1,0.1,0.1",
    exclude_articles: Annotated[Optional[str], typer.Option(help="Hold out these article ranges as OOD, e.g. 1500-1999,4000-4499")] = None,
    val_articles: Annotated[Optional[str], typer.Option(help="Use these article ranges as validation")] = None,
    holdout_title: Annotated[Optional[list[str]], typer.Option(help="Title regex held out as OOD (repeatable)")] = None,
    n_bins: Annotated[int, typer.Option(help="Coherence quantile bins")] = 5,
    threshold: Annotated[Optional[list[str]], typer.Option(help="Gate threshold override NAME=VALUE, e.g. max_split_ks=0.6 (repeatable)")] = None,
    on_duplicate: OnDuplicateOpt = "error",
    workers: WorkersOpt = None,
    dask_address: DaskAddressOpt = None,
) -> None:
    """Build a gated dataset from a Wikipedia snapshot and print its folder."""
    from lvm_core.contracts.build_options import BuildOptions
    from lvm_core.contracts import VECTOR_DTYPES

    if vector_dtype not in VECTOR_DTYPES:
        raise typer.BadParameter(f"{vector_dtype!r}: expected one of {', '.join(VECTOR_DTYPES)}", param_hint="--vector-dtype")

    def go() -> str:
        options = BuildOptions(
            encoder=encoder,
            context_len=context_len,
            min_words=min_words,
            max_words=max_words,
            seed=seed,
            fractions=tuple(float(x) for x in fractions.split(",")),
            exclude_articles=_ranges_or_none(exclude_articles),
            val_articles=_ranges_or_none(val_articles),
            split_mode="titles" if holdout_title else ("ranges" if exclude_articles else "stratified"),
            holdout_titles=holdout_title or None,
            n_bins=n_bins,
            thresholds=_parse_thresholds(threshold),
            on_duplicate=on_duplicate,
            vector_dtype=vector_dtype,
        )
        from flows.build_dataset import build_dataset
        from flows.runners import shard_task_runner

        flow = build_dataset.with_options(task_runner=shard_task_runner(workers, dask_address))
        return flow(source=source, data_dir=_data_dir(data_dir), limit_articles=limit_articles, snapshot_id=snapshot_id, options=options)

    path = _run_flow(go)
    _print_dataset_summary(Path(path))
    typer.echo(path)


def _parse_thresholds(items: Optional[list[str]]) -> dict[str, float | bool]:
    out: dict[str, float | bool] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        if not sep:
            raise typer.BadParameter(f"{item!r}: expected NAME=VALUE", param_hint="--threshold")
        v = value.strip().lower()
        out[name.strip()] = v in ("true", "yes", "1") if v in ("true", "false", "yes", "no") else float(value)
    return out


def _print_dataset_summary(path: Path) -> None:
    from lvm_core.contracts import DatasetPaths
    from lvm_core.contracts.manifest import read_manifest

    m = read_manifest(DatasetPaths(path).manifest)
    t = Table(title=f"dataset {m.dataset_id}", show_header=False)
    t.add_row("articles / chunks", f"{m.counts.articles} / {m.counts.chunks}")
    t.add_row("sequences " + "/".join(m.sequences), " / ".join(str(v) for v in m.sequences.values()))
    t.add_row("encoder", f"{m.encoder.name} ({m.encoder.dim}-d)")
    if m.coherence.mean is not None:
        t.add_row("coherence mean", f"{m.coherence.mean:.3f}")
    t.add_row("crossing windows", str(m.crossing_windows))
    t.add_row("oracle recall@5", f"{m.oracle_recall_at_5:.4f}")
    t.add_row("gates", "all passed" if m.gates_passed else "FAILED")
    err.print(t)


@app.command()
def sequences(
    npz: Annotated[Path, typer.Option(help="Reference-format vectors NPZ (vectors, article_indices, chunk_indices[, concept_texts])")],
    output: Annotated[Path, typer.Option(help="Output training-sequences NPZ")],
    exclude_articles: Annotated[Optional[str], typer.Option(help="Article index ranges to leave out, e.g. 1500-1999,4000-4499")] = None,
    context_len: Annotated[int, typer.Option(help="Context length")] = 5,
) -> None:
    """Convert a reference-project vectors NPZ into its training-sequence layout (strict per-article windows)."""
    from lvm_core.data.npz_compat import convert_reference_npz

    summary = _run(convert_reference_npz, npz, output, _ranges_or_none(exclude_articles), context_len)
    console.print_json(data=summary)


Arch = typer.Option(help="Architecture: amn (baseline), amn_mix (AMN anchored on its attention mix), gru, lstm, transformer")


@app.command()
def train(
    data: Annotated[str, typer.Option(help="A built dataset folder, or a reference-format training-sequences NPZ")],
    val: Annotated[Optional[str], typer.Option(help="Validation NPZ (reference format; dataset folders carry their own)")] = None,
    arch: Annotated[str, Arch] = "amn",
    epochs: Annotated[int, typer.Option(help="Maximum epochs (early stopping on val cosine may end sooner)")] = 20,
    batch: Annotated[int, typer.Option("--batch", "--batch-size", help="Batch size")] = 64,
    lr: Annotated[float, typer.Option(help="AdamW learning rate")] = 1e-4,
    loss: Annotated[str, typer.Option(help="mse | cosine | infonce | mse+infonce")] = "mse",
    patience: Annotated[int, typer.Option(help="Early-stopping patience in epochs")] = 3,
    dropout: Annotated[float, typer.Option(help="Dropout in the model")] = 0.5,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay")] = 0.1,
    seed: Annotated[int, typer.Option(help="Random seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the interrupted run from its last checkpoint")] = False,
    force: Annotated[bool, typer.Option("--force", help="Train on a dataset that failed its gates (recorded on the run)")] = False,
    name: Annotated[Optional[str], typer.Option(help="Registered model name [default: lvm-<arch>]")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Train a model, log it to MLflow and register it as `challenger`."""
    from flows.train_model import train_model
    from lvm_core.train import TrainConfig

    def go():
        opts = TrainConfig(loss=loss, patience=patience, seed=seed)
        return train_model(data=data, val=val, arch=arch, epochs=epochs, batch_size=batch, lr=lr, resume=resume,
                           force=force, data_dir=_data_dir(data_dir), registered_name=name, dropout=dropout,
                           weight_decay=weight_decay, train_options=opts)

    summary = _run_flow(go)
    t = Table(title=f"{summary['name']} v{summary['version']} ({summary['status']}, {summary['epochs_run']} epochs)")
    t.add_column("predictor")
    t.add_column("val cosine", justify="right")
    t.add_row(f"[bold]{arch} (model)[/]", f"{summary['val_cosine']:.4f}")
    for k, v in summary["baselines_val_cosine"].items():
        t.add_row(k, "" if v is None else f"{v:.4f}")
    err.print(t)
    typer.echo(summary["uri"])


@app.command()
def compare(
    data: Annotated[str, typer.Option(help="A built dataset folder")],
    arch: Annotated[Optional[list[str]], typer.Option(help="Architectures to train (repeatable) [default: all]")] = None,
    epochs: Annotated[int, typer.Option(help="Maximum epochs per architecture")] = 20,
    batch: Annotated[int, typer.Option("--batch", "--batch-size", help="Batch size")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate")] = 1e-4,
    data_dir: DataDirOpt = None,
) -> None:
    """Train every architecture on one dataset; print params, val/ood cosine, train time and latency beside the baselines."""
    from flows.compare import compare_architectures
    from lvm_core.evaluation.bootstrap import format_delta, format_interval

    out = _run_flow(compare_architectures, data=data, archs=arch or ["amn", "amn_mix", "gru", "lstm", "transformer"], epochs=epochs,
                    batch_size=batch, lr=lr, data_dir=_data_dir(data_dir))
    t = Table(title="architectures beside the trivial baselines")
    for col in ("predictor", "params", "val cos (selection)", "test cos [95% CI]", "Δ test vs best baseline", "ood cos",
                "train s", "ms/batch"):
        t.add_column(col, justify="left" if col == "predictor" else "right")
    for r in sorted(out["rows"], key=lambda r: -r["val_cosine"]):
        d = r.get("delta_vs_best_baseline")
        delta = format_delta(d["delta"], d["low"], d["high"]) if d and r["predictor"] != r.get("best_baseline") else "—"
        t.add_row(r["predictor"], f"{r['params']:,}", f"{r['val_cosine']:.4f}",
                  format_interval(r["test_cosine"], *(r.get("test_interval") or (None, None))), delta,
                  f"{r['ood_cosine']:.4f}", f"{r['train_seconds']:.0f}", f"{r['latency_ms_per_batch']:.2f}")
    err.print(t)
    typer.echo(out["markdown"])


@app.command()
def evaluate(
    model: Annotated[str, typer.Option(help="Registered model: models:/NAME/VERSION, models:/NAME@ALIAS, or a model folder")] = "models:/lvm-amn@challenger",
    dataset: Annotated[Optional[str], typer.Option(help="Dataset folder [default: the one the model was trained on]")] = None,
    no_promote: Annotated[bool, typer.Option("--no-promote", help="Only evaluate; move no alias")] = False,
    allow_contamination: Annotated[bool, typer.Option("--allow-contamination", help="Evaluate even if evaluation articles of the dataset were training articles of the model (or that cannot be checked); tagged contamination=<n> articles, never promoted")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Evaluate a model beside the trivial baselines, write the report, apply gates, promote if all pass.

    Refused (exit 1) when any val/test/ood article of the dataset was a training article of the model."""
    from flows.evaluate_model import evaluate_model

    summary = _run_flow(evaluate_model, model=model, dataset=dataset, data_dir=_data_dir(data_dir), promote=not no_promote,
                        allow_contamination=allow_contamination)
    _print_evaluation(summary)


def _print_evaluation(summary: dict) -> None:
    t = Table(title=f"{summary['model']} beside the trivial baselines (same windows)")
    for col in ("predictor", "split", "cosine", "margin", "r@5", "mrr", "contrastive_acc"):
        t.add_column(col, justify="left" if col in ("predictor", "split") else "right")
    for row in summary["summary"]:
        name = row["predictor"]
        if name == summary.get("model_name_in_metrics"):
            name = f"[bold]{name}[/]"
        t.add_row(name, row["split"], *(_f(row.get(k)) for k in ("cosine", "margin", "r@5", "mrr", "contrastive_acc")))
    err.print(t)
    g = Table(title="post-training gates")
    for col in ("gate", "passed", "value", "threshold"):
        g.add_column(col)
    for name, r in summary["gates"].items():
        g.add_row(name, "[green]yes[/]" if r["passed"] else "[red]NO[/]", _fv(r["value"]), _fv(r["threshold"]))
    err.print(g)
    promo = summary.get("promotion") or {}
    err.print(f"promotion: {promo.get('action', 'skipped')} {promo.get('message', '')}".rstrip(), soft_wrap=True)
    cont = summary.get("contamination") or {}
    if cont.get("status") in ("contaminated", "unchecked"):
        err.print(f"[bold yellow]contamination:[/] {cont.get('tag')} (allowed; not promoted)", highlight=False, soft_wrap=True)
    err.print(f"report: {summary['report']['html']}", soft_wrap=True)


def _f(v) -> str:
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


@app.command()
def promote(
    version: Annotated[int, typer.Option(help="Model version to make champion")],
    name: Annotated[str, typer.Option(help="Registered model name")] = "lvm-amn",
    force: Annotated[bool, typer.Option("--force", help="Promote even if its gates failed (recorded)")] = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Move the `champion` alias to a version whose gates passed (the previous champion is kept for rollback)."""
    from lvm_core import tracking as registry

    registry.configure_tracking(Path(_data_dir(data_dir)))
    result = _run(registry.promote, name, version, None, force)
    err.print(f"{result.action}: {result.message}" if result.message else result.action)
    if not result.promoted and result.action != "already_champion":
        raise typer.Exit(1)


@app.command()
def rollback(
    name: Annotated[str, typer.Option(help="Registered model name")] = "lvm-amn",
    data_dir: DataDirOpt = None,
) -> None:
    """Move `champion` back to the previous champion."""
    from lvm_core import tracking as registry

    registry.configure_tracking(Path(_data_dir(data_dir)))
    result = _run(registry.rollback, name)
    err.print(f"{result.action}: champion is now v{result.champion}. {result.message}".strip())


@app.command()
def models(
    name: Annotated[str, typer.Option(help="Registered model name")] = "lvm-amn",
    data_dir: DataDirOpt = None,
) -> None:
    """List the versions of a registered model with aliases and gate results."""
    from lvm_core import tracking as registry

    registry.configure_tracking(Path(_data_dir(data_dir)))
    rows = _run(registry.list_versions, name)
    t = Table("version", "aliases", "gates", "failed gates", "dataset", "run")
    for r in rows:
        tags = r.get("tags", {})
        t.add_row(str(r.get("version")), ",".join(r.get("aliases", [])), tags.get("gates_passed", ""),
                  tags.get("failed_gates", ""), tags.get("dataset_id", ""), str(r.get("run_id", ""))[:12])
    console.print(t)


@app.command()
def run(
    source: Annotated[str, typer.Option(help="'sample' or a dump / Parquet / JSONL path")] = "sample",
    limit_articles: Annotated[Optional[int], typer.Option(help="Only the first N articles (quick runs)")] = None,
    arch: Annotated[str, Arch] = "amn",
    epochs: Annotated[int, typer.Option(help="Maximum epochs")] = 20,
    batch: Annotated[int, typer.Option("--batch", "--batch-size", help="Batch size")] = 64,
    lr: Annotated[float, typer.Option(help="Learning rate")] = 1e-4,
    threshold: Annotated[Optional[list[str]], typer.Option(help="Gate threshold override NAME=VALUE (repeatable)")] = None,
    on_duplicate: OnDuplicateOpt = "error",
    data_dir: DataDirOpt = None,
    workers: WorkersOpt = None,
    dask_address: DaskAddressOpt = None,
) -> None:
    """Run the whole pipeline (build → train → evaluate → promote) and print gates and model vs baselines."""
    from flows.pipeline import lvm_pipeline
    from lvm_core.contracts.build_options import BuildOptions

    def go():
        return lvm_pipeline(source=source, data_dir=_data_dir(data_dir), limit_articles=limit_articles, arch=arch,
                            epochs=epochs, batch_size=batch, lr=lr,
                            build_options=BuildOptions(thresholds=_parse_thresholds(threshold), on_duplicate=on_duplicate),
                            workers=workers, dask_address=dask_address)

    out = _run_flow(go)
    _print_dataset_summary(Path(out["dataset"]))
    _print_evaluation(out["evaluation"])
    root = Path(_data_dir(data_dir)).resolve()
    err.print(f"dataset:    {out['dataset']}", soft_wrap=True)
    err.print(f"model:      {out['train']['uri']}  (MLflow run {out['train']['run_id']})", soft_wrap=True)
    err.print(f"MLflow UI:  .venv/bin/mlflow ui --backend-store-uri sqlite:///{root}/mlflow.db", soft_wrap=True)


@app.command()
def drift(
    a: Annotated[Path, typer.Option(help="Dataset folder of the older snapshot")],
    b: Annotated[Path, typer.Option(help="Dataset folder of the newer snapshot")],
    plot: Annotated[Optional[Path], typer.Option(help="Write an overlay histogram PNG here")] = None,
) -> None:
    """Compare article coherence between two builds (mean difference, KS statistic and p-value)."""
    from lvm_core.data import coherence
    from lvm_core.data.build import load_dataset

    def coh(root: Path):
        ds = load_dataset(root, require_ready=False)
        return coherence.article_coherence(ds.vectors, ds.article_ids, ds.chunk_index)

    ca, cb = _run(coh, a), _run(coh, b)
    report = coherence.coherence_drift(ca, cb)
    if plot is not None:
        coherence.plot_coherence_drift(ca, cb, plot, labels=(a.name, b.name))
        report["plot"] = str(plot)
    console.print_json(data=report)


@app.command("monitor-drift")
def monitor_drift_command(
    current: Annotated[Optional[str], typer.Option(help="Served contexts: an .npy of shape (n, ctx, D), or a dataset folder (its test/ood windows) [default: $LVM_SERVED_CONTEXTS]")] = None,
    model: Annotated[Optional[str], typer.Option(help="Reference = the training data of this registered model: models:/<name>@<alias> or models:/<name>/<version> [default: models:/lvm-amn@champion unless --dataset or --service]")] = None,
    service: Annotated[Optional[str], typer.Option(help="Reference = the training data of the model this running `lvm serve` answers with, e.g. http://127.0.0.1:8000 (token from LVM_SERVE_TOKEN)")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="Reference = this dataset folder or dataset id")] = None,
    window: Annotated[int, typer.Option(min=10, help="Contexts sampled from each side")] = 2000,
    threshold_auc: Annotated[float, typer.Option(min=0.5, max=1.0, help="Drift when the domain-classifier ROC-AUC is above this")] = 0.75,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Drift when the MMD permutation p-value is below this")] = 0.01,
    seed: Annotated[int, typer.Option(help="Sampling and permutation seed")] = 0,
    data_dir: DataDirOpt = None,
) -> None:
    """Check once whether served contexts drifted from the model's training contexts; exit 1 on drift.

    Runs the `monitor_drift` flow (alerts through LVM_ALERT_WEBHOOK_URL and scores to LVM_PUSHGATEWAY_URL
    when set) and prints each score beside its threshold.
    """
    from flows.drift import monitor_drift

    if not (model or service or dataset):
        model = "models:/lvm-amn@champion"
    out = _run_flow(monitor_drift, reference_dataset=dataset, current=current, data_dir=_data_dir(data_dir),
                    model=model, service=service, threshold_auc=threshold_auc, alpha=alpha, max_windows=window, seed=seed)
    t = Table("test", "value", "threshold", "fires", title=f"{Path(out['current']).name} vs training contexts of {out['reference']}")
    t.add_row("domain-classifier ROC-AUC", f"{out['auc']:.4f}", f"> {out['threshold_auc']}", "[red]yes[/]" if out["auc"] > out["threshold_auc"] else "no")
    t.add_row("MMD permutation p-value", f"{out['mmd_p_value']:.4f}", f"< {out['alpha']}", "[red]yes[/]" if out["mmd_p_value"] < out["alpha"] else "no")
    console.print(t)
    console.print(f"{out['n_reference']} reference vs {out['n_current']} served contexts; alert: {out['alert'] or 'none sent'}; "
                  f"pushed to Prometheus: {'yes' if out['pushed'] else 'no'}", highlight=False, soft_wrap=True)
    if out["drifted"]:
        err.print(f"[bold red]drift:[/] {'; '.join(out['reasons'])}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print("no drift", highlight=False)


@app.command()
def watch(
    source: Annotated[Optional[str], typer.Option(help="Folder / fsspec URL of dumps, or a Wikimedia-style dumps index [default: $LVM_SNAPSHOT_SOURCE]")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be triggered")] = False,
    backfill: Annotated[bool, typer.Option("--backfill", help="Also trigger snapshots older than the newest handled one")] = False,
    deployment: Annotated[str, typer.Option(help="Pipeline deployment to trigger")] = "lvm_pipeline/lvm-pipeline",
    data_dir: DataDirOpt = None,
) -> None:
    """Look for new Wikipedia snapshots and trigger the pipeline deployment once per new one (needs a Prefect server)."""
    from flows.watch_snapshots import watch_snapshots

    report = _run_flow(watch_snapshots, source=source, data_dir=_data_dir(data_dir), deployment_name=deployment,
                       dry_run=dry_run, backfill=backfill)
    console.print_json(data=report.model_dump(mode="json"))


@app.command()
def check(
    dataset: Annotated[Path, typer.Argument(help="A built dataset folder (published or set aside under _failed/)")],
    threshold: Annotated[Optional[list[str]], typer.Option(help="Gate threshold override NAME=VALUE on top of the dataset's own (repeatable)")] = None,
    docs_dir: Annotated[Optional[Path], typer.Option("--docs-dir", help="Where Data Docs and validation_result.json go [default: a new temporary folder]; never inside the dataset")] = None,
    docs: Annotated[bool, typer.Option("--docs/--no-docs", help="Render the Data Docs HTML")] = True,
    encoder: Annotated[Optional[str], typer.Option(help="Encoder to re-encode the oracle sample with [default: the dataset's]; its fingerprint must match")] = None,
) -> None:
    """Re-run every data gate on an existing dataset (oracle recomputed from its vectors and texts); exit 1 if any fails.

    The dataset folder is only read.
    """
    from expectations.check import check_dataset

    result = _run(check_dataset, dataset, _parse_thresholds(threshold), docs_dir, docs, encoder)
    t = Table(title=f"data gates: {Path(dataset).name}")
    t.add_column("gate", no_wrap=True)
    for col in ("passed", "value", "threshold", "detail"):
        t.add_column(col, overflow="fold")
    for r in result.report.results:
        t.add_row(r.name, "[green]yes[/]" if r.passed else "[red]NO[/]", _fv(r.value), _fv(r.threshold),
                  "" if r.passed else r.detail)
    console.print(t)
    o = result.oracle
    console.print(f"oracle recall@{o['k']}: {o['recall']:.4f} ({o['hits']}/{o['sample_size']} re-encoded targets of "
                  f"{o['n_targets']}, seed {o['seed']}); the manifest recorded {_fv(result.recorded_oracle)}",
                  highlight=False, soft_wrap=True)
    if result.report.docs_path:
        console.print(f"data docs: {result.report.docs_path}", highlight=False, soft_wrap=True)
    if not result.passed:
        err.print(f"[bold red]failed:[/] {', '.join(result.report.failed)}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    console.print("all data gates passed", highlight=False)


def _fv(v) -> str:
    """A gate value or threshold for a table cell: floats to 4 places, a delta with its interval as
    `Δ +0.003 [−0.002, +0.008] vs NAME (split)`, other dicts as k=v pairs."""
    if isinstance(v, dict) and {"delta", "low", "high"} <= set(v):
        from lvm_core.evaluation.bootstrap import format_delta

        return f"{format_delta(v['delta'], v['low'], v['high'])} vs {v.get('baseline', '?')} ({v.get('split', '?')})"
    if isinstance(v, dict):
        return ", ".join(f"{k}={_fv(x)}" for k, x in v.items())
    return _f(v)


@app.command()
def datasets(data_dir: DataDirOpt = None) -> None:
    """List built datasets."""
    from lvm_core.data.build import list_datasets

    rows = list_datasets(Path(_data_dir(data_dir)))
    t = Table("dataset", "ready", "articles", "chunks", "train/val/test/ood", "created")
    for r in rows:
        s = r["sequences"] or {}
        t.add_row(r["dataset"], "yes" if r["ready"] else "no", str(r["articles"]), str(r["chunks"]),
                  "/".join(str(s.get(k, "-")) for k in ("train", "val", "test", "ood")), str(r["created_at"]))
    console.print(t)


@app.command()
def serve(
    model: Annotated[str, typer.Option(help="Model to serve: models:/<name>@<alias> (followed), models:/<name>/<version> or a folder")] = "models:/lvm-amn@champion",
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8000,
    refresh: Annotated[float, typer.Option(help="Seconds between re-reads of the alias (a moved alias is loaded and swapped in)")] = 10.0,
    max_batch: Annotated[int, typer.Option(help="Most contexts per request")] = 256,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body in MB")] = 8.0,
    record_contexts: Annotated[Optional[Path], typer.Option("--record-contexts", envvar="LVM_SERVED_CONTEXTS", help="Keep the last received contexts in this .npy (rewritten every 30 s) for `lvm monitor-drift` and the drift-monitor deployment [default: none kept]")] = None,
    contexts_window: Annotated[int, typer.Option(min=1, help="Contexts kept in the --record-contexts window")] = 5000,
    data_dir: DataDirOpt = None,
) -> None:
    """Serve predictions over HTTP (FastAPI + uvicorn); set LVM_SERVE_TOKEN to require a bearer token on /v1/*."""
    import os

    import uvicorn

    from lvm_core.serving import TOKEN_ENV, ModelHolder, ServeSettings, create_app

    holder = ModelHolder(model, Path(_data_dir(data_dir)), refresh_s=refresh)
    served = _run(holder.load)
    if host not in ("127.0.0.1", "localhost", "::1") and not os.environ.get(TOKEN_ENV):
        err.print(f"[bold yellow]warning:[/] listening on {host} without {TOKEN_ENV}: anyone who reaches it can use it",
                  highlight=False, soft_wrap=True)
    settings = ServeSettings(max_batch=max_batch, max_body_bytes=int(max_body_mb * 1024 * 1024),
                             contexts_path=record_contexts, contexts_window=contexts_window)
    app_ = create_app(model, holder=holder, settings=settings, refresh_s=refresh)
    err.print(f"serving {served.model.describe()} on http://{host}:{port}", highlight=False, soft_wrap=True)
    uvicorn.run(app_, host=host, port=port, log_level="info")


# --- staged rollout ----------------------------------------------------------------------------------

rollout_app = typer.Typer(help="Staged canary rollout of a challenger: 5% → 20% → 100% with automatic rollback.",
                          no_args_is_help=True)
app.add_typer(rollout_app, name="rollout")

RolloutNameOpt = Annotated[str, typer.Option("--name", help="Registered model name")]


def _print_rollout(state) -> None:
    t = Table(title=f"rollout of {state.name}", show_header=False)
    t.add_row("status", state.status)
    if state.challenger is not None:
        t.add_row("challenger / champion at start", f"v{state.challenger} / v{state.champion}")
        t.add_row("share", f"{state.share:.0%} (step {state.step} of plan {', '.join(f'{p:.0%}' for p in state.plan)})")
        t.add_row("started / step started", f"{state.started_at} / {state.step_started_at}")
    d = state.last_decision or {}
    if d:
        t.add_row("last decision", f"{d.get('action')} at {d.get('at')}: {d.get('reason')}")
    console.print(t)


@rollout_app.command("start")
def rollout_start(
    version: Annotated[int, typer.Option("--version", help="Challenger version to roll out (its offline gates must have passed)")],
    name: RolloutNameOpt = "lvm-amn",
    service_url: Annotated[Optional[list[str]], typer.Option("--service-url", envvar="LVM_SERVE_URL", help="Base URL of each `lvm serve` replica (repeatable); token from LVM_SERVE_TOKEN [default: http://127.0.0.1:8000]")] = None,
    step_seconds: Annotated[float, typer.Option(min=0.0, help="Seconds each share is watched before deciding")] = 600.0,
    check_seconds: Annotated[float, typer.Option(min=0.0, help="Seconds between stats reads within a step (a regression rolls back at once)")] = 30.0,
    plan: Annotated[str, typer.Option(help="Challenger shares, increasing, ending at 1 (reaching it promotes)")] = "0.05,0.2,1.0",
    max_holds: Annotated[int, typer.Option(min=0, help="Extra periods a step may wait for enough samples before rolling back")] = 3,
    min_requests: Annotated[int, typer.Option(min=1, help="Requests per version before any step")] = 100,
    min_feedback: Annotated[int, typer.Option(min=0, help="Feedback cosines per version before any step (0: do not judge cosine)")] = 30,
    max_error_rate_increase: Annotated[float, typer.Option(help="Largest challenger − champion server error rate")] = 0.01,
    max_p99_ratio: Annotated[float, typer.Option(help="Largest challenger / champion p99 latency (plus --p99-slack-ms)")] = 1.5,
    p99_slack_ms: Annotated[float, typer.Option(help="Latency slack added to the p99 limit, in ms")] = 10.0,
    max_cosine_drop: Annotated[float, typer.Option(help="Largest champion − challenger online cosine")] = 0.02,
    data_dir: DataDirOpt = None,
) -> None:
    """Run the staged rollout flow; exit 1 when it rolled back (the alert goes to LVM_ALERT_WEBHOOK_URL)."""
    from flows.rollout import staged_rollout
    from lvm_core.rollout import Thresholds, check_plan

    shares = _run(lambda: list(check_plan(float(x) for x in plan.split(","))))
    thresholds = Thresholds(min_requests=min_requests, min_feedback=min_feedback,
                            max_error_rate_increase=max_error_rate_increase, max_p99_ratio=max_p99_ratio,
                            p99_slack_s=p99_slack_ms / 1e3, max_cosine_drop=max_cosine_drop)
    out = _run_flow(staged_rollout, name=name, challenger=version, service_urls=service_url or None,
                    step_seconds=step_seconds, check_seconds=check_seconds, plan=shares, max_holds=max_holds,
                    thresholds=thresholds, data_dir=_data_dir(data_dir))
    t = Table("share", "decision", "reason", title=f"rollout of {name} v{version}: {out['outcome']}")
    for d in out["decisions"]:
        t.add_row(f"{d['numbers'].get('share', 0):.0%}", d["action"], d["reason"])
    err.print(t)
    typer.echo(f"{out['outcome']}: champion is v{out['champion']}")
    if out["outcome"] != "promoted":
        raise typer.Exit(1)


@rollout_app.command("status")
def rollout_status(name: RolloutNameOpt = "lvm-amn", data_dir: DataDirOpt = None) -> None:
    """Print the rollout state recorded on the registered model (what every replica follows)."""
    from lvm_core import rollout
    from lvm_core import tracking as registry

    registry.configure_tracking(Path(_data_dir(data_dir)))
    _print_rollout(_run(rollout.read_state, name))


@rollout_app.command("promote")
def rollout_promote(name: RolloutNameOpt = "lvm-amn", data_dir: DataDirOpt = None) -> None:
    """Step the active rollout by hand to its next share; from the last canary share, promote to champion."""
    from lvm_core import rollout
    from lvm_core import tracking as registry

    registry.configure_tracking(Path(_data_dir(data_dir)))
    state, result = _run(rollout.advance, name)
    if result is not None:
        err.print(f"{result.action}: {result.message}", soft_wrap=True)
    _print_rollout(state)


@rollout_app.command("abort")
def rollout_abort(
    name: RolloutNameOpt = "lvm-amn",
    reason: Annotated[str, typer.Option(help="Recorded as the decision's reason")] = "aborted by hand",
    data_dir: DataDirOpt = None,
) -> None:
    """Roll the active rollout back: share 0, champion alias restored, reason recorded."""
    from lvm_core import rollout
    from lvm_core import tracking as registry

    registry.configure_tracking(Path(_data_dir(data_dir)))
    _print_rollout(_run(rollout.abort, name, reason))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

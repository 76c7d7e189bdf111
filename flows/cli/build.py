"""`lvm build` (a gated dataset from a snapshot) and `lvm sequences` (a reference NPZ to training sequences)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flows.cli.common import call, call_flow, console
from flows.cli.options import (
    DaskAddressOpt,
    DataDirOpt,
    EmbedResourcesOpt,
    OnDuplicateOpt,
    WorkersOpt,
    WorkUrlOpt,
    data_dir_of,
    parse_thresholds,
    ranges_or_none,
)
from flows.cli.tables import print_dataset_summary
from lvm_core.contracts.layout import DEFAULT_SPLIT_SEED


def build(
    source: Annotated[str, typer.Option(help="'sample' (embedded enwiki excerpt), a *-pages-articles*.xml[.bz2] dump, or a .parquet/.jsonl with id,title,text")] = "sample",
    data_dir: DataDirOpt = None,
    limit_articles: Annotated[int | None, typer.Option(help="Only the first N articles (quick runs)")] = None,
    snapshot_id: Annotated[str | None, typer.Option(help="Override the snapshot id derived from the source name/digest")] = None,
    encoder: Annotated[str | None, typer.Option(help="sentence-transformers model name or path, optionally @BACKEND: auto (CUDA fp16 when present, else fp32), torch, torch-fp16, onnx-int8 (CPU, ~4x faster, refused below mean cosine 0.99 to fp32), e.g. all-MiniLM-L6-v2@onnx-int8 [default: packaged all-MiniLM-L6-v2, auto]")] = None,
    vector_dtype: Annotated[str, typer.Option(help="Vectors on disk: float32, or float16 (half the disk and page cache; computed in float32)")] = "float32",
    context_len: Annotated[int, typer.Option(help="Chunks of context per training sequence")] = 5,
    min_words: Annotated[int, typer.Option(help="Minimum words per chunk")] = 40,
    max_words: Annotated[int, typer.Option(help="Maximum words per chunk")] = 120,
    seed: Annotated[int, typer.Option(help="Seed of the stratified split (a family's first build)")] = DEFAULT_SPLIT_SEED,
    fractions: Annotated[str, typer.Option(help="train,val,test,ood article fractions (val selects, test reports; three values = train,val,ood with no test split)")] = "0.7,0.1,0.1,0.1",
    exclude_articles: Annotated[str | None, typer.Option(help="Hold out these article ranges as OOD, e.g. 1500-1999,4000-4499")] = None,
    val_articles: Annotated[str | None, typer.Option(help="Use these article ranges as validation")] = None,
    holdout_title: Annotated[list[str] | None, typer.Option(help="Title regex held out as OOD (repeatable)")] = None,
    n_bins: Annotated[int, typer.Option(help="Coherence quantile bins")] = 5,
    threshold: Annotated[list[str] | None, typer.Option(help="Gate threshold override NAME=VALUE, e.g. max_split_ks=0.6 (repeatable)")] = None,
    on_duplicate: OnDuplicateOpt = "error",
    workers: WorkersOpt = None,
    dask_address: DaskAddressOpt = None,
    embed_resources: EmbedResourcesOpt = None,
    work_url: WorkUrlOpt = None,
    cold: Annotated[bool, typer.Option("--cold", help="Full build: reuse nothing from the previous dataset or the work folders (every article parsed, chunked and looked up again); the embedding cache is still read (exact, so the dataset equals an incremental build's); splits still follow the family's split registry")] = False,
    previous_dataset: Annotated[str | None, typer.Option(help="Published dataset folder to carry on from (its split registry; unless --cold, the chunks and vectors of its unchanged articles: same chunker and encoder required) [default: the newest published dataset of the same family]")] = None,
) -> None:
    """Build a gated dataset from a Wikipedia snapshot and print its folder."""
    from lvm_core.contracts.build_options import BuildOptions
    from lvm_core.contracts.layout import VECTOR_DTYPES

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
            exclude_articles=ranges_or_none(exclude_articles),
            val_articles=ranges_or_none(val_articles),
            split_mode="titles" if holdout_title else ("ranges" if exclude_articles else "stratified"),
            holdout_titles=holdout_title or None,
            n_bins=n_bins,
            thresholds=parse_thresholds(threshold),
            on_duplicate=on_duplicate,
            vector_dtype=vector_dtype,
            cold=cold,
            previous_dataset=previous_dataset,
            work_url=work_url,
        )
        from flows.build_dataset import build_dataset
        from flows.infra.runners import shard_task_runner

        flow = build_dataset.with_options(task_runner=shard_task_runner(workers, dask_address, embed_resources))
        return flow(source=source, data_dir=data_dir_of(data_dir), limit_articles=limit_articles, snapshot_id=snapshot_id, options=options)

    path = call_flow(go)
    print_dataset_summary(Path(path))
    typer.echo(path)


def sequences(
    npz: Annotated[Path, typer.Option(help="Reference-format vectors NPZ (vectors, article_indices, chunk_indices[, concept_texts])")],
    output: Annotated[Path, typer.Option(help="Output training-sequences NPZ")],
    exclude_articles: Annotated[str | None, typer.Option(help="Article index ranges to leave out, e.g. 1500-1999,4000-4499")] = None,
    context_len: Annotated[int, typer.Option(help="Context length")] = 5,
) -> None:
    """Convert a reference-project vectors NPZ into its training-sequence layout (strict per-article windows)."""
    from lvm_core.data.npz_compat import convert_reference_npz

    summary = call(convert_reference_npz, npz, output, ranges_or_none(exclude_articles), context_len)
    console.print_json(data=summary)

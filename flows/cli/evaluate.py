"""`lvm evaluate`: a model beside the baselines, its report, gates and promotion."""

from __future__ import annotations

from typing import Annotated

import typer

from flows.cli.common import call_flow
from flows.cli.options import DataDirOpt, data_dir_of, parse_thresholds
from flows.cli.tables import print_evaluation


def evaluate(
    model: Annotated[str, typer.Option(help="Registered model: models:/NAME/VERSION, models:/NAME@ALIAS, or a model folder")] = "models:/lvm-amn@challenger",
    dataset: Annotated[str | None, typer.Option(help="Dataset folder [default: the one the model was trained on]")] = None,
    no_promote: Annotated[bool, typer.Option("--no-promote", help="Only evaluate; move no alias")] = False,
    allow_contamination: Annotated[bool, typer.Option("--allow-contamination", help="Evaluate even if evaluation articles of the dataset were training articles of the model (or that cannot be checked); tagged contamination=<n> articles, never promoted")] = False,
    threshold: Annotated[list[str] | None, typer.Option(help="Gate threshold override NAME=VALUE (repeatable), e.g. min_test_cosine=0.6, max_test_evaluations=10 (old names min_val_cosine, max_ood_val_gap still work)")] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Evaluate a model beside the trivial baselines, write the report, apply gates, promote if all pass.

    Refused (exit 1) when any val/test/ood article of the dataset was a training article of the model."""
    from flows.evaluate_model import evaluate_model

    summary = call_flow(evaluate_model, model=model, dataset=dataset, data_dir=data_dir_of(data_dir), promote=not no_promote,
                        allow_contamination=allow_contamination, thresholds=parse_thresholds(threshold) or None)
    print_evaluation(summary)

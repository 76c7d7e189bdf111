"""The metrics of a next-chunk predictor, one module per family; each function is pure (same inputs, same
number) and its docstring says what a value means.

- `cosine`: cosine to the target, margin over the last context chunk
- `offsets`: offset sweep (which chunk around the target the prediction is closest to)
- `retrieval`: rank of the target among all chunks and within its article (r@k, mrr, median rank)
- `contrastive`: share of other windows' targets farther from the prediction than its own
- `ablations`: change of cosine when the context is altered
- `rollout`: cosine several steps ahead with predictions fed back
- `breakdown`: nearest-chunk table for a reader, cosine per coherence bin
"""

from __future__ import annotations

from lvm_core.evaluation.metrics.ablations import ablation_contexts, ablations
from lvm_core.evaluation.metrics.breakdown import cosine_by_bin, neighbor_table
from lvm_core.evaluation.metrics.contrastive import contrastive_accuracy, contrastive_shares, mean_share
from lvm_core.evaluation.metrics.cosine import cosine_to_target, margin_vs_last
from lvm_core.evaluation.metrics.offsets import OFFSET_AFTER, offset_rows, offset_sweep, peak_offset
from lvm_core.evaluation.metrics.retrieval import (
    rank_summary,
    retrieval_metrics,
    retrieval_ranks,
    within_article_metrics,
    within_article_ranks,
)
from lvm_core.evaluation.metrics.rollout import rollout, rollout_mask

__all__ = [
    "OFFSET_AFTER",
    "ablation_contexts",
    "ablations",
    "contrastive_accuracy",
    "contrastive_shares",
    "cosine_by_bin",
    "cosine_to_target",
    "margin_vs_last",
    "mean_share",
    "neighbor_table",
    "offset_rows",
    "offset_sweep",
    "peak_offset",
    "rank_summary",
    "retrieval_metrics",
    "retrieval_ranks",
    "rollout",
    "rollout_mask",
    "within_article_metrics",
    "within_article_ranks",
]

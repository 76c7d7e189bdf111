"""The two fit-free baselines: copy the last context chunk, or take the context mean."""

from __future__ import annotations

import numpy as np

from lvm_core.data.windows import SequenceLike, check_windows
from lvm_core.io.vectors import l2_normalize
from lvm_core.models.baselines.base import SavedBaseline, check_ctx


class CopyLast(SavedBaseline):
    """Predict the last context chunk: the "nothing changes" answer."""

    name = "copy_last"

    def fit(self, vectors: np.ndarray, seqs: SequenceLike) -> CopyLast:
        check_windows(seqs, vectors, what="seqs", allow_empty=False)
        return self

    def predict(self, ctx: np.ndarray) -> np.ndarray:
        ctx = check_ctx(ctx, self.name)
        return l2_normalize(ctx[:, -1])


class ContextMean(SavedBaseline):
    """Predict the (normalised) mean of the context: the "same topic" answer."""

    name = "context_mean"

    def fit(self, vectors: np.ndarray, seqs: SequenceLike) -> ContextMean:
        check_windows(seqs, vectors, what="seqs", allow_empty=False)
        return self

    def predict(self, ctx: np.ndarray) -> np.ndarray:
        ctx = check_ctx(ctx, self.name)
        return l2_normalize(ctx.mean(axis=1))

"""Trivial next-chunk predictors that every model is compared against, on the same sequences.

All share the `Baseline` interface: `fit(vectors, seqs)`, `predict(ctx (B, N, D)) -> (B, D)` unit rows,
`save(path)` to a small `.npz` (no pickle) and `load_baseline(path)`. Sequences are row-index windows
(`lvm_core.data.windows.SequenceSet`, checked by its `check_windows`); fitting gathers vectors in batches
(`iter_gathered`) so `(n, N, D)` is never built for all windows at once. Scoring a baseline on windows is
the models' own path, `lvm_core.models.predict`.

- `CopyLast`: ctx[-1].
- `ContextMean`: mean of the context.
- `RecencyWeightedMean`: one weight per context slot, fitted on train to maximise the mean cosine
  (least-squares start, then L-BFGS on the exact mean cosine using per-window slot Gram matrices).
- `RidgeBaseline`: ridge regression from the flattened context to the residual of the recency-weighted mean
  (target − recency mean), alpha chosen on a held-out slice of train articles (or fixed), solved in closed
  form in the primal or the dual, whichever is smaller; strong shrinkage gives the recency mean back.

Modules: `base` (the interface, `.npz` persistence), `simple` (copy-last, context mean), `recency`,
`ridge`, `collection` (fit all, save all, load one).
"""

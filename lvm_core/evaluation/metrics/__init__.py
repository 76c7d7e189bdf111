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

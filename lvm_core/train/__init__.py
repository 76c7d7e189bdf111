"""Training of next-chunk vector models: row-index data path, checkpoints, early stopping, divergence, resume.

- Data: windows are row indices into one `(n_chunks, D)` vector array. `torch.from_numpy(vectors)` is made
  once and every batch is gathered with `index_select`, so no `(n, ctx, D)` copy ever exists.
- Checkpoints (`<checkpoint_dir>/last` and `/best`, `lvm_core.train.checkpoint`): each is a model folder
  (`models.loader.save_model_dir`: weights.safetensors, config.json, encoder.json) plus `meta.json` (train
  config, epoch, history) and, in `last`, `state.pt` with optimizer, scheduler, loop counters and RNG states
  (plain tensors/numbers only, loadable with `torch.load(..., weights_only=True)`); resuming rebuilds the
  model with `load_model_dir`. Each folder is staged and renamed as a whole (`storage.atomic_dir`); `best` is committed
  before `last`, so a crash between the two leaves at worst a `best` one epoch ahead, which the
  deterministic re-run of that epoch rewrites.
- Early stopping on validation cosine (mean cos(pred, target)); the best weights are restored at the end.
  Epoch 0, the untrained model, is a candidate like every epoch: its val cosine (`initial_val_cosine`) is
  the score to beat, its weights are written to `best/` before the first epoch, and when no epoch beats
  it by `min_delta` the run returns (and the caller ships) the untrained weights with `best_epoch == 0`.
- Divergence (non-finite loss, smoothed-loss blow-up, gradient-norm explosion) stops training without
  touching the last good checkpoint and is *returned*, not raised: `TrainResult(status="diverged",
  reason=...)`, so the caller can mark its tracking run failed and still read the history.
- `resume=True` continues from `last` with the saved RNG states, so a resumed run reproduces the epochs
  an uninterrupted run would have produced. A checkpoint of another arch/config/dim is refused.

Modules: `config` (TrainConfig, EpochMetrics, TrainResult), `batches` (WindowDataset, make_loader),
`losses`, `optim` (AdamW, warm-up schedules), `rng` (determinism, seeding, RNG states), `epoch` (one
epoch, loop state, validation cosine), `trainer` (`train`), `checkpoint`, `data` (TrainingData), `baselines`
(the trivial baselines a training is compared with).
"""

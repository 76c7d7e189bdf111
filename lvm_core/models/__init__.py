"""Next-chunk vector predictors: one `nn.Module` per architecture, built only through `build_model`.

Every model maps a context of unit vectors `(B, context_len, dim)` to one L2-normalised vector `(B, dim)`.
Every model is the recency-weighted mean of its context (slot weights fitted on the training windows,
shifted per window by a small gate over the context's Gram matrix) plus a learned *residual*; the gate's
and the residual's last layers start at zero, so an untrained model outputs exactly the
`recency_weighted_mean` baseline and training only has to learn the correction (`archs/base.py`,
docs/residual-models.md).

The architecture is chosen by `ModelConfig.arch` and resolved through `MODEL_REGISTRY` only: there is one
class per name, every class checks that the config it receives names it, and checkpoints store `arch`
plus the whole config, so a checkpoint can never be loaded into a different model class.

Modules: `config` (ModelConfig), `archs/` (one module per architecture), `builder` (MODEL_REGISTRY,
build_model), `loader` (the one model folder format), `predict` (the one batched prediction path),
`baselines` (the trivial predictors every model is compared against).
"""

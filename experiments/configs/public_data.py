"""What the public-data configs share: the data path default and the protocol's settings."""

import os

import ml_collections

from experiments.configs import synthetic

# Configs look beside the checkout by default; a missing folder is reported
# with this location and the `--config.data.path` flag.
SHARED_DATA = os.path.normpath(
  os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data")
)


# The ranking-only ablation's budget: where the unified ml100k run validated best, since there
# is no ranking validation target to stop on.
RANKING_ONLY_STEPS = 1400


def base_config(source: str, relative: str) -> ml_collections.ConfigDict:
  """The synthetic default's training setup, reading `../shared/data/<relative>` instead.

  That includes its kernels: `model.kernel` and `step.loss.kernel` are "xla" (pure JAX);
  "pallas" selects the Triton kernels of `kernels/` (BUILD.md).
  """
  config = synthetic.get_config()
  config.data.source = source
  config.data.path = os.path.join(SHARED_DATA, relative) if relative else ""
  # Leave-last-out targets are the next action: no multi-token offsets.
  config.model.offsets_seconds = (0.0,)
  config.item_init.method = "random"  # the warm start did not help ml-100k (sequences.py: on)
  config.data.window_stride = 0  # overlapping windows did not help ml-100k
  config.optimizer.learning_rate = 5e-4  # the synthetic default's rate lost on games
  config.step.loss.ranking_weight = 1.0  # the synthetic default's weight is untried here
  config.model.relative_position_buckets = 0  # the recency bias lost on games (ml100k.py: on)
  # Independent sigmoids: the softmax against none lost on ml-100k.
  config.model.exclusive_outcomes = False
  # Public catalogues hold thousands of items: full precision costs little and loses no recall.
  config.index.dtype = "f32"
  # The full softmax up to 20,000 items, else thousands of sampled negatives (LossConfig).
  config.step.loss.softmax = "auto"
  return config


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """The variants every public-data config takes.

  "retrieval_only" and "ranking_only" are the ablations of the unified model
  (the same command line with one head's losses switched off). "sasrec_ce" is
  the baseline of SASRec with full softmax cross-entropy (Klenitskiy & Vasilev,
  RecSys 2023) on this framework's transformer: a plain next-item model, the
  "any" query trained on the next action against the whole catalogue, nothing
  else (no outcome conditions, MAM, ranking loss, item bias, history features,
  seen-negative exclusion or training slates). Its ranking head is never trained, so its
  `ranking` figures are an untrained head's; `ranking_by_retrieval_head` is
  its ranker. Same budget and early stopping as the unified config: validation
  stops it when it has converged. "runlocal" shrinks the run to a few steps for
  tests and CI.
  """
  if variant == "retrieval_only":
    config.step.loss.ranking_weight = 0.0
    config.step.loss.mam_weight = 0.0
  elif variant == "ranking_only":
    config.step.loss.retrieval_weight = 0.0
    # Validation scores retrieval, which this variant does not train: a fixed budget instead.
    config.eval_every = 0
    config.num_epochs = 0.0
    config.num_steps = RANKING_ONLY_STEPS
  elif variant == "sasrec_ce":
    loss = config.step.loss
    loss.softmax = "full"
    loss.outcome_conditions = False
    loss.ranking_weight = 0.0
    loss.mam_weight = 0.0
    loss.exclude_seen_negatives = False
    config.step.mask_prob = 0.0  # masked actions are there for the MAM loss only
    config.model.item_bias = False
    config.model.repeat_buckets = 0
    config.data.max_slates = 0
  elif variant == "runlocal":
    config.num_epochs = 0.0
    config.num_steps = 20
    config.log_every = 10
    config.eval_every = 10
    config.batch_size = 8
    config.checkpoint.every_steps = 10
    config.model.max_length = 32
    config.model.embed_dim = 16
    config.model.action_dim = 8
    config.model.mlp_dim = 32
    config.model.head_hidden_dim = 16
  elif variant:
    raise ValueError(
      f"unknown variant {variant!r}; expected '', 'retrieval_only', 'ranking_only', "
      "'sasrec_ce' or 'runlocal'"
    )
  return config

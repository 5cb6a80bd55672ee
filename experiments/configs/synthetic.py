"""The synthetic default: a world with known ground truth, small enough for 2 CPU cores.

Launch (from the repository root):
  python -m experiments.train --config=experiments/configs/synthetic.py --workdir=runs/synthetic
Variants: `--config=experiments/configs/synthetic.py:runlocal` shrinks everything
for tests and CI (seconds, not minutes). `synthetic.py:revisit` is the default with returning
users: half the requests of a user with earlier actions show earlier items again
(`data.synthetic.revisit = 0.5`, unipinrec/data/synthetic_revisit.py), so a retrieval target
can be an item of the user's history; "retrieval_unfiltered" ranks it against the whole
catalogue, "retrieval" against the items the user has not engaged with. `synthetic.py:cold_items`
is the default with items as features: a fifth of the items are cold (shown only to held-out
users, so training never meets them) and every item carries a noisy content vector
(unipinrec/data/synthetic_items.py); results.json reports "retrieval_cold" and "retrieval_warm"
beside "retrieval". `synthetic.py:huge_catalogue` has 10^8 items, each computed from its id
(`data.synthetic.items_from_ids`, unipinrec/data/generated_items.py), hashed ids and content
features: it trains and evaluates on 2 CPU cores, with no oracle (RESULTS.md has its memory).
Override any field with
`--config.a.b=value`, e.g. `--config.num_steps=500`; every knob of the world is
`--config.data.synthetic.NAME`.

The default is the run config's dataclass defaults (`unipinrec/config.py` and the blocks it
names, each field with its reason). Expected figures and wall time: RESULTS.md, "Synthetic
world". Then `python -m experiments.evaluate_generation --workdir=...` for budgets and
multi-token generation.
"""

import ml_collections

from unipinrec.config import RunConfig, to_dict

VARIANTS = ("", "runlocal", "revisit", "cold_items", "huge_catalogue")


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The run configuration of `variant`, one of `VARIANTS` ("": the default)."""
  config = ml_collections.ConfigDict(to_dict(RunConfig()))
  if variant == "runlocal":
    config.num_steps = 40
    config.log_every = 10
    config.batch_size = 8
    config.eval_batch_size = 64
    config.optimizer.warmup_steps = 5
    # Pinned, not the default's: the tests' tolerances on this tiny world were set at it.
    config.optimizer.learning_rate = 1e-3
    config.checkpoint.every_steps = 10
    config.data.max_slates = 4
    config.data.window_stride = 8
    config.data.synthetic.num_users = 120
    config.data.holdout_fraction = 0.2
    config.data.synthetic.num_items = 600
    config.data.synthetic.num_topics = 5
    config.data.synthetic.requests_per_user = 20
    config.model.max_length = 16
    config.model.embed_dim = 16
    config.model.action_dim = 8
    config.model.mlp_dim = 32
    config.model.head_hidden_dim = 16
    config.step.loss.num_random_negatives = 32
    config.step.loss.num_inbatch_negatives = 32
    # A day's window of positives, so that the tests run the windowed loss end to end.
    config.step.loss.future_window_seconds = 86400.0
    config.step.loss.max_future_positives = 8
    config.generation.timing_repeats = 1
    config.serving.num_candidates = 64
    config.serving.batch_size = 8
  elif variant == "revisit":
    config.data.synthetic.revisit = 0.5
  elif variant == "cold_items":
    config.data.synthetic.cold_item_fraction = 0.2
    # One short of the truth's latent_dim + 1 dimensions: even noise-free content loses a little.
    config.data.synthetic.content_dim = 32
    config.data.synthetic.content_noise = 0.5
    # Features only: a cold item's vector comes from the same function as a trained item's.
    config.model.item_id_part = "none"
    config.item_init.method = "random"  # no id table to warm-start
  elif variant == "huge_catalogue":
    # Every item computed from its id (unipinrec/data/generated_items.py): no item table.
    config.data.synthetic.items_from_ids = True
    config.data.synthetic.num_items = 100_000_000
    config.data.synthetic.content_dim = 32
    config.data.synthetic.content_noise = 0.5
    config.model.item_id_part = "hashed"
    config.model.hash_rows = 1 << 18  # per table: a fixed cost, whatever the catalogue
    config.item_init.method = "random"  # the co-occurrence start builds a vector per item
    # 1,000 held-out users: each of them is scored against all 10^8 items, once per condition.
    config.data.holdout_fraction = 1 / 6
  elif variant:
    raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
  return config

"""MovieLens-100K under PROTOCOL.md: leave-last-out retrieval and rated ranking slates.

Launch (from the repository root; the data folder defaults to ../shared/data/ml-100k):
  python -m experiments.train --config=experiments/configs/ml100k.py --workdir=runs/ml100k
Ablations, same command line: `ml100k.py:retrieval_only`, `ml100k.py:ranking_only`.
Baseline: `ml100k.py:sasrec_ce`, SASRec with full softmax cross-entropy on this transformer
(`public_data.apply_variant`); its `ranking` figures are an untrained ranking head's.
Other layouts (u.data, ratings.dat, ratings.csv): `--config.data.path=FOLDER`.
Outcomes: rating >= 4 is "high" (PinRec's save), <= 3 "low" (click).
"""

import ml_collections

from experiments.configs import public_data


def get_config(variant: str = "") -> ml_collections.ConfigDict:
  """The run configuration; variants "", "retrieval_only", "ranking_only", "sasrec_ce",
  "runlocal"."""
  config = public_data.base_config("movielens", "ml-100k")
  config.data.ranking_slates = True
  config.data.max_slates = 4  # sampled slates per example: cheap ranking signal, costly steps
  config.batch_size = 64
  # 100 actions, not SASRec's 200: half the users have fewer than 65 ratings, so a 200-long
  # window is mostly padding, and the halved step time pays for more steps at the same quality.
  config.num_steps = 2000
  config.eval_every = 100
  config.patience = 5
  config.model.max_length = 100
  config.model.embed_dim = 48
  config.model.action_dim = 16
  config.model.dropout_rate = 0.2  # SASRec's for MovieLens: 943 users overfit quickly
  # A learned recency bias on attention: better retrieval and ranking, in fewer steps.
  config.model.relative_position_buckets = 32
  # Retrieval logits are cosine / temperature: a softer softmax than the synthetic default's
  # suits a catalogue where many films are plausible next.
  config.model.temperature = 0.2
  # A learned logit bias per film on retrieval (cosine / temperature + bias): some films are
  # rated next whatever came before.
  config.model.item_bias = True
  # Films the user already rated stay negatives (`step.loss.exclude_seen_negatives` off): the
  # history bias h learns to push them down, so the unfiltered figure holds as well as the
  # filtered one (docs/experiments/2026-11-27-ml100k-tuning.md).
  return public_data.apply_variant(config, variant)

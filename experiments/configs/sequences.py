"""Any SASRec-format file (`user item` per line, in time order) under PROTOCOL.md.

Launch (from the repository root):
  python -m experiments.train --config=experiments/configs/sequences.py \
    --config.data.path=FILE --workdir=runs/NAME
Such files carry no time and one kind of action: an interaction's time is its
line's position, so a retrieval future window (`step.loss.future_window_seconds`) counts actions.
Variants: "runlocal" (a few steps, for tests), "retrieval_only", "ranking_only", and
"sasrec_ce", SASRec with full softmax cross-entropy on this transformer
(`public_data.apply_variant`): every step scores the whole catalogue, a [anchors, items]
logit matrix a chunk of anchors at a time, so it suits catalogues of tens of thousands.
"""

import ml_collections

from experiments.configs import public_data


def get_config(variant: str = "", relative: str = "") -> ml_collections.ConfigDict:
  """The run configuration of `../shared/data/<relative>`, or of --config.data.path."""
  config = public_data.base_config("sasrec", relative)
  config.batch_size = 128
  # The budget follows the log: the rate holds its peak until three validations in a row bring
  # nothing, then decays over 30% of the steps so far and the run stops ("wsd"); 60 passes over
  # the training examples cap it. A fixed 3,000 steps cut a sparse log off while rising, and a
  # cosine over the cap stopped by patience with the rate still high.
  config.num_epochs = 60.0
  config.eval_every = 500
  config.patience = 3
  config.optimizer.schedule = "wsd"
  config.optimizer.decay_fraction = 0.3
  config.model.max_length = 50  # SASRec's length for the Amazon sets
  config.model.embed_dim = 64
  config.model.action_dim = 8
  config.model.dropout_rate = 0.5  # SASRec's for the sparse Amazon sets
  config.data.max_slates = 4  # sampled slates per example: cheap ranking signal, costly steps
  # Catalogues beyond 20,000 items (softmax "auto", public_data.py) draw at least 4,096.
  config.step.loss.num_random_negatives = 1024
  # Rows from the training logs' item co-occurrence (unipinrec/train/item_init.py): sparse
  # logs leave a random table on a long plateau.
  config.item_init.method = "cooccurrence"
  return public_data.apply_variant(config, variant)

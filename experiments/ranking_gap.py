"""Where a synthetic run's ranking AUC gap to the history oracle lies (WORKDIR/ranking_gap.json).

  python -m experiments.ranking_gap --workdir=runs/synthetic

The run's best validated (else newest) checkpoint scores the held-out slates, as
`experiments.evaluate` does, beside the history oracle (the world's outcome model
with each interest estimated from the history). The report
(`unipinrec.bench.ranking_gap`) gives both AUCs inside slates, the model's AUC
with the oracle's per-slate means, the variance of the logit difference split into
item, slate and user-item parts, and both logits regressed on the world's terms
(affinity to the estimated interest, log popularity, quality).
"""

import json
import os
import time

import numpy as np
from absl import flags, logging

from experiments import cli, launch
from unipinrec import records
from unipinrec.bench import ranking_gap
from unipinrec.errors import ConfigError
from unipinrec.evaluation import evaluate
from unipinrec.train.experiment import restore_trained

_WORKDIR = flags.DEFINE_string("workdir", "runs/synthetic", "A synthetic training run's directory.")

OUTPUT_FILE = "ranking_gap.json"


def main(argv):
  del argv
  start = time.time()
  run = launch.load_run_config(_WORKDIR.value)
  if run.data.source != "synthetic":
    raise ConfigError(f"config.data.source={run.data.source!r}: only a synthetic world has oracles")
  experiment, params, step, _ = restore_trained(run, _WORKDIR.value)
  examples, world = experiment.data.eval_examples, experiment.data.world
  model_probabilities, _ = evaluate.slate_scores(
    experiment.model, params, examples, run.eval_batch_size
  )
  estimated = evaluate.history_oracle_world(world, examples)
  requests, items = examples.ranking_requests, examples.ranking_items
  terms = {
    "affinity": np.einsum(
      "rd,rcd->rc", estimated.request_interests[requests], world.item_vectors[items]
    ),
    "log_popularity": world.item_log_popularity[items],
    "quality": world.item_quality[items],
  }
  gap = ranking_gap.gap_report(
    model_probabilities,
    estimated.true_outcome_probs(requests, items),
    examples.ranking_outcomes,
    items,
    terms,
  )
  logging.info("ranking gap to the history oracle at step %d: %s", step, json.dumps(gap, indent=1))
  path = os.path.join(_WORKDIR.value, OUTPUT_FILE)
  records.write_json_atomic(
    path,
    {
      **gap,
      "step": step,
      "command": launch.command("ranking_gap"),
      "git_commit": records.git_commit(),
      "wall_seconds": time.time() - start,
    },
  )
  logging.info("wrote %s", path)


if __name__ == "__main__":
  cli.run(main)

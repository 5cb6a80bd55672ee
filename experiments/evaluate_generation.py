"""Generation figures of a trained run: budgets, conditioning and multi-token generation.

  python -m experiments.evaluate_generation --workdir=runs/synthetic
  python -m experiments.plot --workdir=runs/synthetic

Writes WORKDIR/generation.json (the run's config.json chooses everything;
the `generation` block sets list sizes and the vectors compared).
"""

import os
import time

from absl import flags, logging

from experiments import cli, huge_pages, launch
from unipinrec.evaluation.generation import evaluate_generation
from unipinrec.records import git_commit, write_json_atomic
from unipinrec.train.experiment import restore_trained

_WORKDIR = flags.DEFINE_string("workdir", "runs/synthetic", "A training run's work directory.")
GENERATION_FILE = "generation.json"


def main(argv):
  del argv
  start = time.time()
  run = launch.load_run_config(_WORKDIR.value)
  experiment, params, step, _ = restore_trained(run, _WORKDIR.value)
  figures = evaluate_generation(
    experiment.model,
    params,
    experiment.data,
    run.generation,
    experiment.data.eval_users,
    run.eval_batch_size,
    run.serving.merge_cosine,
  )
  path = os.path.join(_WORKDIR.value, GENERATION_FILE)
  write_json_atomic(
    path,
    {
      **figures,
      "step": step,
      "command": launch.command("evaluate_generation"),
      "git_commit": git_commit(),
      "seed": run.seed,
      "wall_seconds": time.time() - start,
    },
  )
  logging.info("wrote %s", path)


if __name__ == "__main__":
  huge_pages.reexec_with_huge_pages()  # restarts the process once, before any work
  cli.run(main)

"""How hard a synthetic world is, without training: its baselines on the held-out users.

  python -m experiments.world_baselines --config.data.synthetic.drift=0.05 --output=world.json

Generates the world of `--config` (the synthetic default unless told otherwise), cuts the
held-out users' examples as training's evaluation does, and reports popularity, the history
baselines (most recent, most frequent), the oracle and the history oracle, with the checks
issue 2 judges a world by. The history oracle's gap to the oracle is the part of the oracle's
lead that no model of the history can close, so a world's targets can be judged before a
12-minute training run.
"""

import json
import time

from absl import flags, logging

from experiments import cli, launch
from unipinrec import records
from unipinrec.config import from_mapping, to_dict
from unipinrec.data.dataset import prepare_data
from unipinrec.errors import ConfigError
from unipinrec.evaluation import report

_CONFIG = cli.define_config_file(
  "config", launch.DEFAULT_CONFIG, "ml_collections config file, optionally `file.py:variant`."
)
_OUTPUT = flags.DEFINE_string("output", "", "JSON file for the figures ('' = log them only).")


def main(argv):
  del argv
  start = time.time()
  run = from_mapping(_CONFIG.value.to_dict())
  if run.data.source != "synthetic":
    raise ConfigError(f"config.data.source={run.data.source!r}: only a synthetic world has oracles")
  data = prepare_data(run.data, run.model.max_length, run.seed)
  baselines = report.baseline_reports(data)
  primary = data.repeats.primary
  launch.log_figures(list(baselines.items()), primary)
  checks = report.world_checks(baselines, primary)
  logging.info("checks: %s", json.dumps(checks))
  if _OUTPUT.value:
    document = {
      "primary": primary,
      "repeats": data.repeats.as_dict(),
      "baselines": baselines,
      "checks": checks,
      "config": to_dict(run),
      "command": launch.command("world_baselines"),
      "git_commit": records.git_commit(),
      "seed": run.seed,
      "wall_seconds": time.time() - start,
    }
    records.write_json_atomic(_OUTPUT.value, document)
    logging.info("wrote %s", _OUTPUT.value)


if __name__ == "__main__":
  cli.run(main)

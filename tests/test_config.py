"""One config truth: the dataclasses' defaults are the synthetic default, and every shipped
config builds."""

import importlib

import pytest

from experiments.configs import synthetic
from unipinrec.config import RunConfig, for_data, from_mapping, to_dict
from unipinrec.errors import ConfigError
from unipinrec.losses import AUTO_FULL_SOFTMAX_ITEMS, AUTO_RANDOM_NEGATIVES, LossConfig

SHIPPED = [
  ("synthetic", ""),
  ("synthetic", "runlocal"),
  ("synthetic", "revisit"),
  ("synthetic", "cold_items"),
  ("synthetic", "huge_catalogue"),
  *(
    (name, variant)
    for name in ("ml100k", "games", "sequences")
    for variant in ("", "retrieval_only", "ranking_only", "sasrec_ce", "runlocal")
  ),
]


def _leaves(tree: dict, prefix: str = "") -> dict:
  leaves = {}
  for key, value in tree.items():
    if isinstance(value, dict) and value:
      leaves.update(_leaves(value, f"{prefix}{key}."))
    else:
      leaves[prefix + key] = value
  return leaves


def test_dataclass_defaults_are_the_synthetic_default():
  shipped = _leaves(synthetic.get_config().to_dict())
  defaults = _leaves(to_dict(RunConfig()))
  assert shipped.keys() == defaults.keys()
  differing = {k: (shipped[k], defaults[k]) for k in shipped if shipped[k] != defaults[k]}
  assert not differing
  assert from_mapping(synthetic.get_config().to_dict()) == RunConfig()


@pytest.mark.parametrize(("name", "variant"), SHIPPED, ids=[f"{n}:{v}" for n, v in SHIPPED])
def test_every_shipped_config_builds(name, variant):
  module = importlib.import_module(f"experiments.configs.{name}")
  run = from_mapping(module.get_config(variant).to_dict())
  # A work directory's config.json reads back to the same run.
  assert from_mapping(to_dict(run)) == run


def test_epochs_set_the_steps_from_the_data():
  run = from_mapping({"num_epochs": 2.5, "batch_size": 64})
  assert for_data(run, 1000, 500).num_steps == 40  # ceil(2.5 x 1000 / 64)
  assert for_data(RunConfig(), 1000, 500).num_steps == RunConfig().num_steps  # epochs off
  with pytest.raises(ConfigError, match="num_epochs=-1.0 and max_train_minutes=0.0"):
    from_mapping({"num_epochs": -1.0})


@pytest.mark.parametrize(
  ("softmax", "num_items", "want"),
  [
    ("auto", AUTO_FULL_SOFTMAX_ITEMS, ("full", 256)),
    ("auto", AUTO_FULL_SOFTMAX_ITEMS + 1, ("sampled", AUTO_RANDOM_NEGATIVES)),
    ("sampled", 10**6, ("sampled", 256)),
    ("full", 10**6, ("full", 256)),
  ],
)
def test_the_softmax_follows_the_catalogue_under_auto(softmax, num_items, want):
  run = from_mapping({"step": {"loss": {"softmax": softmax, "num_random_negatives": 256}}})
  loss = for_data(run, 10, num_items).step.loss
  assert (loss.softmax, loss.num_random_negatives) == want
  assert loss.full_softmax == (want[0] == "full")
  with pytest.raises(ValueError, match="softmax='auto' is resolved by LossConfig.for_catalogue"):
    _ = run.step.loss.full_softmax if softmax == "auto" else LossConfig(softmax="auto").full_softmax
  with pytest.raises(ConfigError, match="step.loss.softmax='exact'"):
    from_mapping({"step": {"loss": {"softmax": "exact"}}})


@pytest.mark.parametrize("name", ["ml100k", "games", "sequences"])
def test_public_configs_stop_on_validation_not_on_a_fixed_budget(name):
  module = importlib.import_module(f"experiments.configs.{name}")
  for variant in ("", "retrieval_only", "sasrec_ce"):
    run = from_mapping(module.get_config(variant).to_dict())
    assert run.eval_every > 0 and run.patience > 0, variant
    assert run.step.loss.softmax == ("full" if variant == "sasrec_ce" else "auto"), variant
  # Logs of any size: passes over the data, not a step count tuned on one file.
  assert from_mapping(module.get_config().to_dict()).num_epochs == (0 if name == "ml100k" else 60)

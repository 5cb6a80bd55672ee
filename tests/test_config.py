"""One config truth: the dataclasses' defaults are the synthetic default, and every shipped
config builds."""

import importlib

import pytest

from experiments.configs import synthetic
from unipinrec.config import RunConfig, from_mapping, to_dict

SHIPPED = [
  ("synthetic", ""),
  ("synthetic", "runlocal"),
  ("synthetic", "revisit"),
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

"""`synthetic.py:huge_catalogue`: items computed from their ids, so nothing the data or the
model holds grows with the catalogue but the item frequencies."""

import dataclasses

import jax
import numpy as np
import pytest

from experiments.configs import synthetic
from unipinrec.config import from_mapping
from unipinrec.errors import ConfigError
from unipinrec.export.bundle import export_workdir
from unipinrec.train import experiment as experiment_lib

NUM_ITEMS = 10**6


@pytest.fixture(scope="module")
def run():
  config = synthetic.get_config("huge_catalogue")
  config.data.synthetic.num_items = NUM_ITEMS
  config.data.synthetic.num_users = 60
  config.data.synthetic.requests_per_user = 10
  config.model.max_length = 8
  config.model.embed_dim = 16
  config.model.hash_rows = 64
  config.data.max_slates = 2
  return from_mapping(config.to_dict())


@pytest.fixture(scope="module")
def experiment(run):
  return experiment_lib.setup_experiment(run)


def test_the_model_holds_the_generator_and_nothing_of_catalogue_size(experiment):
  data, model = experiment.data, experiment.model.config
  assert data.world is None and data.item_features is None
  assert model.content_generator == data.item_generator.centres.shape
  assert model.content_dim == 32 and model.item_id_part == "hashed"
  tokenizer = experiment.initial_state.params["tokenizer"]
  for name, array in data.item_generator.arrays().items():
    np.testing.assert_array_equal(tokenizer[f"item_features_generator_{name}"], array)
  sizes = [leaf.size for leaf in jax.tree.leaves(experiment.initial_state.params)]
  assert max(sizes) < NUM_ITEMS // 10
  assert len(data.item_vocabulary) == NUM_ITEMS
  np.testing.assert_array_equal(data.item_vocabulary.to_internal([0, 5, NUM_ITEMS + 1]), [0, 5, 0])


def test_item_init_and_export_refuse_a_catalogue_from_ids(experiment, run, tmp_path):
  cooccurrence = dataclasses.replace(run.item_init, method="cooccurrence")
  refused = dataclasses.replace(experiment, run=dataclasses.replace(run, item_init=cooccurrence))
  with pytest.raises(ConfigError, match="item_init.method='random'"):
    experiment_lib.fresh_state(refused)
  with pytest.raises(ConfigError, match="evaluated, not exported"):
    export_workdir(str(tmp_path / "work"), str(tmp_path / "bundle"), run=run)

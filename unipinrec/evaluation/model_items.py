"""The model's catalogue for evaluation: its item vectors held whole when they fit
`eval.stored_item_vectors_mib`, else an encoder that computes a chunk's vectors from its ids
where the chunk is scored (`dot_blocks`), so a catalogue of any size costs one chunk's memory.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from unipinrec.config import EvalConfig
from unipinrec.evaluation.catalogue import DEFAULT
from unipinrec.evaluation.dot_blocks import ItemEncoder
from unipinrec.model.unified import UniPinRec
from unipinrec.sharding import mesh_of, replicated


@dataclasses.dataclass(frozen=True)
class _ScoredRows:
  """(params, ids) -> the model's `scored_item_vectors`: hashable, as the model is, so each
  block shape compiles once."""

  model: UniPinRec

  def __call__(self, params, items: jax.Array) -> jax.Array:
    return self.model.apply({"params": params}, items, method=self.model.scored_item_vectors)


@functools.cache
def _stored_vectors(model: UniPinRec, mesh: Mesh | None) -> Callable:
  """Jitted params -> [N + 1, S] `item_vectors`, replicated over the parameters' `mesh`."""
  jit = jax.jit if mesh is None else functools.partial(jax.jit, out_shardings=replicated(mesh))
  return jit(lambda params: model.apply({"params": params}, method=model.item_vectors))


def stored_mib(model: UniPinRec, params) -> float:
  """MiB of the model's [N + 1, S] float32 item vectors."""
  one = jax.eval_shape(_ScoredRows(model), params, jnp.zeros((1,), jnp.int32))
  return (model.config.num_items + 1) * one.shape[-1] * 4 / 2**20


def catalogue_items(
  model: UniPinRec, params, config: EvalConfig = DEFAULT
) -> np.ndarray | ItemEncoder:
  """The model's [N + 1, S] item vectors, or their encoder when they exceed `config`'s
  `stored_item_vectors_mib`."""
  if stored_mib(model, params) > config.stored_item_vectors_mib:
    return ItemEncoder(_ScoredRows(model), params)
  return np.asarray(_stored_vectors(model, mesh_of(params))(params))

"""The two serving computations, jitted from the model's code or loaded as serialized StableHLO.

`inference.retrieve` (encode the histories, keep the KV cache, build every condition's query)
and `inference.rank_on_cache` are the one implementation. `Computations.jitted` traces them
from the Python model; `export` serializes both with `jax.export` for one batch size (the
shapes are fixed: the `Recommender` pads every batch to it) and a set of platforms, with the
parameters as an argument rather than constants; `Computations.deserialize` runs them with
no access to the model's code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import flax.core
import jax
import jax.numpy as jnp

from unipinrec.model import inference
from unipinrec.model.item_encoder import FROZEN_PREFIX
from unipinrec.model.unified import UniPinRec
from unipinrec.types import Histories, KVCache

# Exported calling conventions name their pytree types: registered once, when first imported.
# None of them has static fields, so their auxiliary data is always ().
for _node in (Histories, KVCache, inference.Retrieved):
  jax.export.register_pytree_node_serialization(
    _node,
    serialized_name=f"unipinrec.{_node.__name__}",
    serialize_auxdata=lambda _: b"",
    deserialize_auxdata=lambda _: (),
  )


@dataclasses.dataclass(frozen=True)
class Computations:
  """What the `Recommender` calls, the parameters first.

  retrieve(params, histories, [B, O + 1] int32 conditions) -> `inference.Retrieved`;
  rank(params, cache, [B, L] history times, [B, K] int32 candidates, [B] request times,
  [B] request surfaces) -> [B, K, O] outcome probabilities.
  """

  retrieve: Callable
  rank: Callable

  @classmethod
  def jitted(cls, model: UniPinRec) -> Computations:
    """Both traced from the model's code; any batch size."""
    return cls(jax.jit(inference.retrieve(model)), jax.jit(inference.rank_on_cache(model)))

  @classmethod
  def deserialize(cls, retrieve: bytes, rank: bytes) -> Computations:
    """Both from what `export` returned; only its batch size and candidate count."""
    return cls(*(jax.jit(jax.export.deserialize(bytearray(b)).call) for b in (retrieve, rank)))


def export(
  model: UniPinRec,
  params: Any,
  batch_size: int,
  num_candidates: int,
  platforms: Sequence[str],
) -> tuple[bytes, bytes]:
  """The serialized `jax.export` of (retrieve, rank) for `batch_size` users and K candidates.

  Args:
    model: the model whose `inference` functions are exported.
    params: its parameters (boxed or not), or anything with their shapes and dtypes.
    batch_size: B, users per call.
    num_candidates: K, candidates ranked per user.
    platforms: where the functions may run (e.g. ("cpu", "cuda")); lowering for a platform
      needs no device of it.
  """
  config = model.config
  b, length, k = batch_size, config.max_length, num_candidates

  def spec(shape: tuple[int, ...], dtype) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, dtype)

  # The dtypes the Recommender passes: an exported function accepts exactly these. Boxes
  # (freshly initialised parameters' partitioning metadata) have no serialized form.
  param_specs = jax.tree.map(lambda x: spec(x.shape, x.dtype), flax.core.meta.unbox(params))
  histories = Histories(
    items=spec((b, length), jnp.int32),
    outcomes=spec((b, length, config.num_outcomes), jnp.bool_),
    times=spec((b, length), jnp.float32),
    surfaces=spec((b, length), jnp.int32),
    lengths=spec((b,), jnp.int32),
  )
  retrieve_args = (param_specs, histories, spec((b, config.num_conditions), jnp.int32))
  jitted = Computations.jitted(model)
  retrieve = jax.export.export(jitted.retrieve, platforms=platforms)(*retrieve_args)
  cache = jax.eval_shape(jitted.retrieve, *retrieve_args).cache
  rank = jax.export.export(jitted.rank, platforms=platforms)(
    param_specs,
    cache,
    histories.times,
    spec((b, k), jnp.int32),
    spec((b,), jnp.float32),
    spec((b,), jnp.int32),
  )
  return bytes(retrieve.serialize()), bytes(rank.serialize())


def export_item_encoder(model: UniPinRec, params: Any, platforms: Sequence[str]) -> bytes:
  """The serialized `jax.export` of `UniPinRec.new_item_vectors` for any number M of items.

  fn(params, [M] int32 ids, {name: [M, ...] float32 rows of the frozen table `name`}) ->
  [M, S] float32 item vectors; the names are `ItemFeatures.tables()`' (`model/item_encoder.py`).
  """
  param_specs = jax.tree.map(
    lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), flax.core.meta.unbox(params)
  )
  (m,) = jax.export.symbolic_shape("m")
  prefix = f"{FROZEN_PREFIX}_"
  rows = {
    name.removeprefix(prefix): jax.ShapeDtypeStruct((m,) + table.shape[1:], table.dtype)
    for name, table in param_specs["tokenizer"].items()
    if name.startswith(prefix)
  }

  def encode(params, items, rows):
    return model.apply({"params": params}, items, rows, method=model.new_item_vectors)

  exported = jax.export.export(jax.jit(encode), platforms=platforms)(
    param_specs, jax.ShapeDtypeStruct((m,), jnp.int32), rows
  )
  return bytes(exported.serialize())

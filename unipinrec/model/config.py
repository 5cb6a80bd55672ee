"""The model's hyper-parameters as a frozen dataclass (no ConfigDict past the edge)."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from kernels import check_kernel
from unipinrec.data.generated_items import ItemGenerator
from unipinrec.data.item_features import FeatureShapes


def _padded(rows: int, multiple: int) -> int:
  """`rows` rounded up to a multiple: the table splits evenly on the mesh."""
  return -(-rows // multiple) * multiple


ITEM_ID_PARTS = ("table", "hashed", "none")
COMPUTE_DTYPES = ("float32", "bfloat16")
HASH_COMBINES = ("sum", "concat")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Sizes of the shared transformer and its two heads; defaults are the synthetic default's.

  A run config leaves the three counts as they are: they are the data's, filled in by
  `with_data_sizes` once the logs are read.
  """

  num_items: int = 0  # catalogue size N; item ids are 1..N, 0 pads
  num_outcomes: int = 0  # O, e.g. 2 for (click, save)
  num_surfaces: int = 1  # surfaces an action can come from
  max_length: int = 64  # L, longest history the encoder sees
  embed_dim: int = 64  # D, width of item embeddings and of retrieval queries
  action_dim: int = 16  # width of the projected action + time + surface features
  num_layers: int = 2
  num_heads: int = 2
  mlp_dim: int = 256
  head_hidden_dim: int = 128  # hidden width of the retrieval MLP and each task head
  temperature: float = 0.05  # retrieval logits are cosine / temperature
  # On tokens and residual branches, training only: without it the model overfits the
  # training users' slates and ranks held-out users' far worse.
  dropout_rate: float = 0.1
  # Compute dtype of the matmuls and activations (transformer, item encoder, heads). Parameters
  # and optimizer state stay float32; normalisation statistics, softmaxes, the L2 norms of
  # queries and item vectors, the outcome logits and the losses are float32 in either.
  dtype: str = "float32"
  item_table_multiple: int = 1024  # table rows padded to a multiple: splits evenly on the mesh
  # Multi-token generation: the retrieval head is also conditioned on a time
  # offset; offset 0 asks for the next action, offset t > 0 for the first action
  # at least t seconds after the anchor (here: later in the visit, the next visit, two days
  # on). One offset, (0.0,), means no offset embedding.
  offsets_seconds: tuple[float, ...] = (0.0, 120.0, 3600.0, 172800.0)
  kernel: str = "xla"  # attention: "xla" (pure JAX) or "pallas" (kernels/candidate_attention.py)
  # Learned attention-logit bias per head and layer on the query - key distance, in T5's
  # buckets (half exact, half logarithmic up to max_length); 0 turns it off. It gives recency
  # directly, where the absolute position embeddings count from the window's first action.
  relative_position_buckets: int = 32
  # An action has one outcome, so the task heads' logits can be one softmax over the outcomes
  # with "none" as the reference class (logit 0): P(engaged) = 1 - P(none) is then a learned
  # probability. False: one independent sigmoid per outcome.
  exclusive_outcomes: bool = True
  # A learned logit bias per item on retrieval: cosine / temperature + bias. The cosine
  # leaves an item no pull of its own (a film many rate next whatever came before), which an
  # unnormalised dot product would carry in the item's norm. Served as an inner product of
  # [query, 1] with [item vector, temperature * bias], so the index needs no other metric.
  item_bias: bool = False
  # History (repeat) features of retrieval: per condition, a learned logit bias on how long ago
  # (this many T5 buckets up to max_length) and how often (log2 buckets) an item occurred in
  # the user's history; other items get none. Logs full of returns (replays, re-buys) need it,
  # the query alone ranks returns badly; on logs without returns it learns to push them down.
  repeat_buckets: int = 16
  # The item side (`model/item_encoder.py`). An item's vector is its id part alone ("table",
  # no features: the plain id table, SASRec's) or MLP([content, side features, id part]),
  # L2-normalised. The id part: "table" (a row per item), "hashed" (the sum or concatenation
  # of rows from `hash_functions` tables of `hash_rows` rows each, so the catalogue's size
  # costs no rows) or "none" (features only).
  item_id_part: str = "table"
  hash_functions: int = 2
  hash_rows: int = 0  # rows per hashed table; "hashed" needs it
  hash_combine: str = "sum"  # "sum" (width D each) or "concat" (D / hash_functions each)
  side_dim: int = 16  # embedding width of each categorical feature
  # The data's feature sizes, filled in by `with_item_features` like the three counts above.
  content_dim: int = 0
  # (G subtopics, latent D) of the data's item generator (`data/generated_items.py`) when the
  # content is computed from each id in the step instead of read from a frozen table: a
  # catalogue of 10^8 items has no room for one. (): a table.
  content_generator: tuple[int, ...] = ()
  categorical_features: tuple[tuple[int, int], ...] = ()  # (values + 1, values per item) each
  numeric_features: int = 0

  def __post_init__(self):
    check_kernel(self.kernel)
    if self.dtype not in COMPUTE_DTYPES:
      raise ValueError(f"dtype={self.dtype!r}; expected one of {COMPUTE_DTYPES}")
    if self.relative_position_buckets < 0:
      raise ValueError(
        f"relative_position_buckets must be 0 (off) or more, got {self.relative_position_buckets}"
      )
    if self.repeat_buckets < 0 or self.repeat_buckets == 1:
      # T5's buckets need an exact and a logarithmic half.
      raise ValueError(f"repeat_buckets must be 0 (off) or at least 2, got {self.repeat_buckets}")
    # A config read back from JSON holds a list; the model must stay hashable.
    offsets = tuple(float(t) for t in self.offsets_seconds)
    if (
      not offsets
      or offsets[0] != 0.0
      or any(b <= a for a, b in zip(offsets[:-1], offsets[1:], strict=True))
    ):
      raise ValueError(
        f"offsets_seconds must start at 0 and increase strictly, got {self.offsets_seconds!r}"
      )
    object.__setattr__(self, "offsets_seconds", offsets)
    object.__setattr__(self, "content_generator", tuple(int(n) for n in self.content_generator))
    categorical = tuple((int(rows), int(width)) for rows, width in self.categorical_features)
    object.__setattr__(self, "categorical_features", categorical)
    self._check_item_side()

  def _check_item_side(self) -> None:
    if self.item_id_part not in ITEM_ID_PARTS:
      raise ValueError(f"item_id_part={self.item_id_part!r}; expected one of {ITEM_ID_PARTS}")
    if self.hash_combine not in HASH_COMBINES:
      raise ValueError(f"hash_combine={self.hash_combine!r}; expected one of {HASH_COMBINES}")
    if self.item_id_part == "hashed":
      if self.hash_functions < 1 or self.hash_rows < 1:
        raise ValueError(
          f"item_id_part='hashed' needs hash_functions >= 1 and hash_rows >= 1, got "
          f"{self.hash_functions} and {self.hash_rows}"
        )
      if self.hash_combine == "concat" and self.embed_dim % self.hash_functions:
        raise ValueError(
          f"hash_combine='concat' splits embed_dim {self.embed_dim} into hash_functions "
          f"{self.hash_functions} equal parts"
        )

  @property
  def has_item_features(self) -> bool:
    """Whether items carry features, so their vectors come from the encoder's MLP."""
    return bool(self.content_dim or self.categorical_features or self.numeric_features)

  def with_item_features(self, shapes: FeatureShapes) -> ModelConfig:
    """This config with the data's item feature sizes."""
    return dataclasses.replace(
      self,
      content_dim=shapes.content_dim,
      categorical_features=shapes.categorical,
      numeric_features=shapes.numeric_dim,
    )

  def with_item_generator(self, generator: ItemGenerator) -> ModelConfig:
    """This config with content computed from ids by the data's `generator`."""
    return dataclasses.replace(
      self,
      content_dim=generator.content_dim,
      content_generator=generator.centres.shape,
    )

  def with_data_sizes(self, num_items: int, num_outcomes: int, num_surfaces: int) -> ModelConfig:
    """This config with the data's catalogue, outcome and surface counts."""
    return dataclasses.replace(
      self, num_items=num_items, num_outcomes=num_outcomes, num_surfaces=num_surfaces
    )

  @property
  def compute_dtype(self) -> jnp.dtype:
    """The dtype matmuls and activations run in (`dtype`)."""
    return jnp.dtype(self.dtype)

  @property
  def width(self) -> int:
    """Transformer width: a token is [item embedding, action features], concatenated."""
    return self.embed_dim + self.action_dim

  @property
  def score_dim(self) -> int:
    """Width of the queries and item vectors retrieval scores by inner product."""
    return self.embed_dim + int(self.item_bias)

  @property
  def repeat_count_buckets(self) -> int:
    """Buckets of an item's count in a history: floor(log2(count)) for counts 1..max_length."""
    return self.max_length.bit_length()

  @property
  def item_table_rows(self) -> int:
    """Rows of the item table: padding row 0, the N items, then unused rows up to the multiple.

    A fixed multiple rather than the device count keeps the table's shape, and
    so its checkpoints, the same on every mesh.
    """
    return _padded(self.num_items + 1, self.item_table_multiple)

  @property
  def hash_table_rows(self) -> int:
    """Rows of each hashed table: `hash_rows`, padded to the table multiple like the id table."""
    return _padded(self.hash_rows, self.item_table_multiple)

  @property
  def head_dim(self) -> int:
    if self.width % self.num_heads:
      raise ValueError(
        f"embed_dim + action_dim = {self.width} is not divisible by num_heads {self.num_heads}"
      )
    return self.width // self.num_heads

  @property
  def num_conditions(self) -> int:
    """Outcomes a retrieval query can be conditioned on: 0 is "any", then each outcome."""
    return self.num_outcomes + 1

  @property
  def num_offsets(self) -> int:
    """Time offsets a retrieval query can ask for (1: the next action only)."""
    return len(self.offsets_seconds)

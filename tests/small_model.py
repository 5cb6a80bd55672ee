"""The smallest model config the evaluation and history-bias tests share: one layer, width 8."""

from unipinrec.model.config import ModelConfig


def small_config(num_items: int, num_outcomes: int, max_length: int, **overrides) -> ModelConfig:
  """A one-layer model of width 8 + 4, no dropout, one offset and no position buckets."""
  return ModelConfig(
    num_items=num_items,
    num_outcomes=num_outcomes,
    max_length=max_length,
    embed_dim=8,
    action_dim=4,
    num_layers=1,
    mlp_dim=16,
    head_hidden_dim=8,
    temperature=0.5,
    dropout_rate=0.0,
    offsets_seconds=(0.0,),
    relative_position_buckets=0,
    exclusive_outcomes=False,
    **overrides,
  )

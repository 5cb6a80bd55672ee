"""Where a ranker's AUC gap to a reference scorer lies, on the same held-out slates.

Used with the synthetic world's history oracle as the reference: it says
whether the model loses inside slates or between them, and whether its
error sits on items (an item's own appeal), on slates (a user's moment), or
on user-item pairs (the affinity estimate). Pure NumPy.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from unipinrec.evaluation import metrics


def engaged_logits(probabilities: np.ndarray) -> np.ndarray:
  """[..., O] outcome probabilities -> [...] log-odds of any outcome (engaged)."""
  engaged = metrics.engaged_probability(np.asarray(probabilities, np.float64))
  engaged = np.clip(engaged, 1e-7, 1.0 - 1e-7)
  return np.log(engaged / (1.0 - engaged))


def within_slate_auc(scores: np.ndarray, labels: np.ndarray, valid: np.ndarray) -> float:
  """Mean AUC over the slates holding both labels: the order inside slates alone."""
  aucs = [
    metrics.auc(s[v], y[v])
    for s, y, v in zip(scores, labels, valid, strict=True)
    if 0 < y[v].sum() < v.sum()
  ]
  return float(np.mean(aucs)) if aucs else float("nan")


def with_slate_means_of(scores: np.ndarray, reference: np.ndarray, valid: np.ndarray) -> np.ndarray:
  """`scores` with each slate's mean over valid items replaced by `reference`'s."""

  def slate_mean(x: np.ndarray) -> np.ndarray:
    return np.sum(np.where(valid, x, 0.0), 1, keepdims=True) / np.maximum(
      valid.sum(1, keepdims=True), 1
    )

  return scores - slate_mean(scores) + slate_mean(reference)


def residual_components(
  residual: np.ndarray, items: np.ndarray, valid: np.ndarray, seed: int = 0
) -> dict[str, float]:
  """Variance of `residual` [R, C] split into item, slate and the rest (user-item pairs).

  Each component is the covariance, across items (or slates), of the mean
  residual in two random halves of the impressions: noise, which differs
  between the halves, cancels out, and what repeats with the item (or the
  slate) stays.
  """
  rows = np.broadcast_to(np.arange(len(items))[:, None], items.shape)
  values = residual[valid] - residual[valid].mean()
  half = np.random.default_rng(seed).random(len(values)) < 0.5
  report = {"total": float(values.var())}
  for name, key in (("item", items[valid]), ("slate", rows[valid])):
    a, b = (_group_means(key[part], values[part], int(key.max()) + 1) for part in (half, ~half))
    both = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[both], b[both]
    report[name] = float(np.mean((a - a.mean()) * (b - b.mean())))
  report["user_item"] = report["total"] - report["item"] - report["slate"]
  return report


def _group_means(keys: np.ndarray, values: np.ndarray, size: int) -> np.ndarray:
  """[size] mean of `values` per key; NaN where a key has none."""
  counts = np.bincount(keys, minlength=size)
  sums = np.bincount(keys, values, size)
  return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def term_weights(logits: np.ndarray, terms: Mapping[str, np.ndarray]) -> dict[str, float]:
  """Least-squares weights of flat `logits` on the named flat `terms` and an intercept, with R2."""
  design = np.stack([*terms.values(), np.ones_like(logits)], axis=1)
  weights, *_ = np.linalg.lstsq(design, logits, rcond=None)
  report = dict(zip([*terms, "intercept"], map(float, weights), strict=True))
  report["r2"] = float(1.0 - np.var(logits - design @ weights) / np.var(logits))
  return report


def gap_report(
  model_probabilities: np.ndarray,
  reference_probabilities: np.ndarray,
  outcomes: np.ndarray,
  items: np.ndarray,
  terms: Mapping[str, np.ndarray],
) -> dict[str, dict]:
  """The model's engaged AUC against the reference's, taken apart.

  Args:
    model_probabilities, reference_probabilities: [R, C, O] outcome probabilities.
    outcomes: [R, C, O] logged multi-hot outcomes.
    items: [R, C] item ids; 0 pads.
    terms: [R, C] features the reference's logit is built from (e.g. the
      world's affinity, popularity and quality), for `term_weights`.
  """
  valid = items > 0
  engaged = outcomes.any(-1)
  model, reference = engaged_logits(model_probabilities), engaged_logits(reference_probabilities)
  report = {}
  for name, logits in (("model", model), ("reference", reference)):
    report[name] = {
      "auc_engaged": metrics.auc(logits[valid], engaged[valid]),
      "auc_within_slates": within_slate_auc(logits, engaged, valid),
      "auc_with_reference_slate_means": metrics.auc(
        with_slate_means_of(logits, reference, valid)[valid], engaged[valid]
      ),
      "term_weights": term_weights(logits[valid], {k: v[valid] for k, v in terms.items()}),
    }
  report["residual_variance"] = residual_components(model - reference, items, valid)
  return report

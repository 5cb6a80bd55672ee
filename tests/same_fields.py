"""Field-by-field equality of two dataclasses of arrays, dtypes included (the readers' routes)."""

import dataclasses

import numpy as np


def assert_same_fields(got, want) -> None:
  """Every field of `got` equals `want`'s: arrays by dtype and value, the rest by ==."""
  for field in dataclasses.fields(want):
    value, expected = getattr(got, field.name), getattr(want, field.name)
    if isinstance(expected, np.ndarray):
      assert value.dtype == expected.dtype, field.name
      np.testing.assert_array_equal(value, expected, err_msg=field.name)
    else:
      assert value == expected, field.name

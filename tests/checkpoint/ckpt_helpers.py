"""Helpers shared by the checkpoint tests (conftest holds the fixtures)."""

from __future__ import annotations

import ml_dtypes
import numpy as np

DTYPES = {"float32": np.dtype(np.float32), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def cast(params: dict[str, np.ndarray], dtype: np.dtype) -> dict[str, np.ndarray]:
    return {k: v.astype(dtype) for k, v in params.items()}


def assert_trees_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    """Same keys, shapes, dtypes and bit-identical values."""
    assert list(got) == list(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        assert got[key].shape == want[key].shape, key
        np.testing.assert_array_equal(got[key].view(np.uint8), want[key].view(np.uint8), err_msg=key)


def assert_one_line_error(path, *needles, call):
    """`call(path)` raises CheckpointError whose single line names the file and every needle."""
    import pytest

    from pg2edge.errors import CheckpointError

    with pytest.raises(CheckpointError) as e:
        call(path)
    message = str(e.value)
    assert "\n" not in message
    for needle in (str(path), *needles):
        assert needle in message, (needle, message)
    return message

"""Shape ops on weights without copies: numpy views, or lazy reads that fetch only the slice they need.

The ONNX lowering folds every weight-only equation; a layer slice, transpose or
reshape of a stacked weight stays a view (or a `Lazy` that reads one layer),
so conversion holds one tensor at a time.
"""

from __future__ import annotations

import numpy as np

from pg2edge.checkpoint.lazy import Lazy, LazyStack

VIEW_OPS = frozenset({"slice", "squeeze", "transpose", "reshape", "expand_dims"})


def broadcast_view(x: np.ndarray, shape, dims) -> np.ndarray:
    """broadcast_in_dim as a zero-copy numpy view (stride 0 on the new axes)."""
    ranked = [1] * len(shape)
    for s, d in zip(np.shape(x), dims):
        ranked[d] = s
    return np.broadcast_to(np.asarray(x).reshape(ranked), tuple(shape))


def frozen_params(params: dict) -> tuple:
    """Hashable form of an equation's params, for weight paths."""
    return tuple((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in sorted(params.items())
                 if k in ("start_indices", "limit_indices", "dimensions", "permutation", "new_sizes"))


def _apply_view(a: np.ndarray, name: str, p: dict, shape: tuple[int, ...]) -> np.ndarray:
    if name == "slice":
        return a[tuple(slice(s, e) for s, e in zip(p["start_indices"], p["limit_indices"]))]
    if name == "transpose":
        return np.transpose(a, p["permutation"])
    return a.reshape(shape)  # squeeze, expand_dims, reshape


def view(value: np.ndarray | Lazy, name: str, p: dict, shape: tuple[int, ...]) -> np.ndarray | Lazy:
    """A shape op on a weight: a numpy view, or a lazy one; layer slices read just that layer."""
    if not isinstance(value, Lazy):
        return _apply_view(value, name, p, shape)
    if isinstance(value, LazyStack) and name == "slice":
        start, limit = p["start_indices"], p["limit_indices"]
        rest_full = all(s == 0 and e == d for s, e, d in zip(start[1:], limit[1:], value.shape[1:]))
        if limit[0] - start[0] == 1 and rest_full:
            layer = value.layer(start[0])
            return Lazy(shape, value.dtype, lambda: layer.materialize()[None])
    return Lazy(shape, value.dtype, lambda: _apply_view(value.materialize(), name, p, shape))

"""Symbolic dimensions (jax shape polymorphism) as int64 tensors computed inside the ONNX graph.

A part traced with a symbolic axis (the decoder `step`: chunk length `m + t`)
has shapes such as `(1, t + m, 8, 256)`. Where a node needs such a shape as a
value (Reshape, Expand, Range, Slice ends), the graph computes it from its
inputs' runtime shapes: each variable is read once with `Shape`, and every
dimension the model produces is affine in the variables (checked), so it is
`c0 + sum(c_i * var_i)` in a few int64 ops.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np


def is_static(dim) -> bool:
    return isinstance(dim, (int, np.integer))


def static_shape(shape: Iterable) -> bool:
    """True when every dimension is a plain integer."""
    return all(is_static(d) for d in shape)


def dim_vars(dim) -> tuple[str, ...]:
    """The variable names a symbolic dimension depends on, sorted."""
    return () if is_static(dim) else tuple(sorted(str(v) for v in dim._get_vars()))


def affine(dim) -> tuple[int, dict[str, int]]:
    """`dim` as (constant, {variable: coefficient}); raises for a non-affine expression."""
    if is_static(dim):
        return int(dim), {}
    names = dim_vars(dim)

    def at(values: dict[str, int]) -> int:
        return int(dim._evaluate({n: values.get(n, 0) for n in names}))

    c0 = at({})
    coeffs = {n: at({n: 1}) - c0 for n in names}
    probe = {n: 7 + 6 * i for i, n in enumerate(names)}
    if at(probe) != c0 + sum(coeffs[n] * probe[n] for n in names):
        raise NotImplementedError(f"ONNX lowering: dimension {dim} is not affine in {', '.join(names)}")
    return c0, {n: c for n, c in coeffs.items() if c}


def dim_product(dims: Iterable):
    """The product of dimensions, symbolic where any is."""
    out = 1
    for d in dims:
        out = out * d
    return out

"""Trace a part's function to a jaxpr with its weights as flat leading arguments.

An input axis given by name (e.g. "t") becomes a jax symbolic dimension, so one
trace serves every length of that axis (the ONNX `step` graph).
"""

from __future__ import annotations

from typing import Callable

import jax


def trace(fn: Callable, params: dict, inputs: list[tuple[str, tuple, str]]):
    """jaxpr of `fn(params, *inputs)` with the params as leading flat arguments.

    An input dimension given as a name (e.g. "t") is traced as a jax symbolic dimension.
    """
    leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    names = ["/".join(str(getattr(k, "key", k)) for k in path) for path, _ in leaves]
    arrays = [leaf for _, leaf in leaves]

    def flat_fn(flat_params, *args):
        return fn(jax.tree_util.tree_unflatten(treedef, flat_params), *args)

    abstract = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in arrays]
    symbols = _symbols(inputs)
    specs = [jax.ShapeDtypeStruct(symbolic_shape(shape, symbols), dtype) for _, shape, dtype in inputs]
    closed = jax.make_jaxpr(flat_fn)(abstract, *specs)
    return closed, names, arrays


def _symbols(inputs: list[tuple[str, tuple, str]]) -> dict:
    """One jax symbolic dimension per distinct named input axis, all in one scope."""
    from jax import export

    names = sorted({d for _, shape, _ in inputs for d in shape if isinstance(d, str)})
    return dict(zip(names, export.symbolic_shape(", ".join(names)))) if names else {}


def symbolic_shape(shape: tuple, symbols: dict) -> tuple:
    """`shape` with its named axes replaced by their symbolic dimensions."""
    return tuple(symbols[d] if isinstance(d, str) else d for d in shape)

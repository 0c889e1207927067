"""Evaluate a jaxpr equation by equation with a caller's rule: how exporters and reports rewrite the model's graph.

`jax.core.eval_jaxpr` binds every equation as it is; the TFLite exporter
(weights to the right of matmuls, weights as variables) and the quantization
report (float and fake-quantized weights side by side) need to decide per
equation instead, over the very graph the model traced.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax.extend.core as jex

EqnRule = Callable[[jex.JaxprEqn, list], list]  # (equation, input values) -> output values

INLINE_PRIMITIVES = ("jit", "pjit", "closed_call", "core_call")  # nested jaxprs a rule may evaluate in place


def eval_jaxpr(jaxpr: jex.Jaxpr, consts: Sequence, args: Sequence, rule: EqnRule) -> list:
    """The outputs of `jaxpr` on `args`, each equation evaluated by `rule`."""
    env: dict = {}

    def read(v):
        return v.val if isinstance(v, jex.Literal) else env[v]

    env.update(zip(jaxpr.constvars, consts))
    env.update(zip(jaxpr.invars, args))
    for eqn in jaxpr.eqns:
        outs = rule(eqn, [read(v) for v in eqn.invars])
        env.update((v, x) for v, x in zip(eqn.outvars, outs) if not isinstance(v, jex.DropVar))
    return [read(v) for v in jaxpr.outvars]


def bind(eqn: jex.JaxprEqn, vals: list) -> list:
    """The equation bound as it is, as a list of outputs."""
    out = eqn.primitive.bind(*vals, **eqn.primitive.get_bind_params(eqn.params))
    return list(out) if eqn.primitive.multiple_results else [out]

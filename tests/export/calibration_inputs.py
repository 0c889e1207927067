"""Stand-in GPTQ calibration for exporter tests: a Hessian of skewed random inputs for every weight matmul."""

from __future__ import annotations

import numpy as np

from pg2edge.param_layout import flatten
from pg2edge.quantize.gptq import Hessians
from pg2edge.quantize.matmul_view import matmul_view

TIED_TABLE = "llm/embedder/input_embedding"


def random_hessians(params: dict, seed: int = 0) -> Hessians:
    """Inputs mostly in a few directions with uneven channels, as real activations are (so GPTQ's codes differ
    from round-to-nearest's); every matmul weight but the tied table, as `convert --gptq` covers."""
    rng = np.random.default_rng(seed)
    hessians = Hessians()
    for name, w in flatten(params).items():
        view = matmul_view(name, np.shape(w))
        if view is None or name == TIED_TABLE:
            continue
        for _, w_kn in view.matrices(np.asarray(w, np.float32)):
            basis = rng.standard_normal((8, view.k)) * rng.uniform(0.2, 3.0, view.k)
            hessians.add(w_kn, rng.standard_normal((64, 8)) @ basis + 0.1 * rng.standard_normal((64, view.k)))
    return hessians

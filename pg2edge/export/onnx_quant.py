"""The recipe-driven `WeightSink` for ONNX: `MatMulNBits` int4/int8 weights, float where the recipe says.

The embedding lookup reads the tied LM head's `MatMulNBits` codes in place
(`GatherBlockQuantized`), so the vocabulary table is stored once. A weight
already written to the bundle's shared file (by another part) is referenced,
not quantized again.
"""

from __future__ import annotations

from pg2edge.checkpoint.lazy import Lazy
from pg2edge.export.onnx_export import FloatWeights
from pg2edge.export.onnx_lower import Const, Dyn, GraphBuilder, weight_key
from pg2edge.quantize.ort_pack import pack_matmul_nbits
from pg2edge.quantize.recipes import Recipe
from pg2edge.quantize.schemes import Scheme

ACCURACY_LEVEL = 4  # int8 activations inside MatMulNBits: the fast CPU kernels


class QuantizedWeights(FloatWeights):
    """Quantize each constant matmul weight per the recipe; leave the rest to the float sink."""

    def __init__(self, recipe: Recipe, accuracy_level: int = ACCURACY_LEVEL):
        self.recipe = recipe
        self.accuracy_level = accuracy_level

    def _packed(self, g: GraphBuilder, w_kn: Lazy, param: str, key: tuple | None, scheme: Scheme
                ) -> tuple[str, str, int]:
        """Initializer names (B, scales) of the packed weight and its block size; emitted once per graph."""
        if key is not None and key in g.memo:
            return g.memo[key]
        if key is not None and g.weights is not None and (key, "B") in g.weights:
            b = g.const(None, f"{param}.B", (key, "B"))
            s = g.const(None, f"{param}.scales", (key, "scales"))
            block = g.weights.meta[key]
        else:
            packed = pack_matmul_nbits(self.recipe.quantize(w_kn.materialize(), scheme, name=param))
            b = g.const(packed.b, f"{param}.B", (key, "B"))
            s = g.const(packed.scales, f"{param}.scales", (key, "scales"))
            block = packed.block_size
            if g.weights is not None and key is not None:
                g.weights.meta[key] = block
        if key is not None:
            g.memo[key] = (b, s, block)
        return b, s, block

    def matmul(self, g: GraphBuilder, x: Dyn, w_kn: Lazy, param: str | None, key: tuple | None) -> str:
        scheme = self._scheme(param, w_kn.shape[0])
        if scheme is None:
            return super().matmul(g, x, w_kn, param, key)
        k, n = w_kn.shape
        b, s, block = self._packed(g, w_kn, param, key, scheme)
        return g.op("MatMulNBits", [x.name, b, s], domain="com.microsoft", K=k, N=n, bits=scheme.bits,
                    block_size=block, accuracy_level=self.accuracy_level)

    def _scheme(self, param: str | None, k: int) -> Scheme | None:
        """The recipe's scheme for this weight; its per-channel fallback when a block does not divide K."""
        scheme = self.recipe.rule_for(param) if param else None
        if scheme is not None and scheme.block is not None and k % scheme.block:
            return self.recipe.fallback
        return scheme

    def fuse_key(self, w_kn: Lazy, param: str | None) -> object:
        scheme = self._scheme(param, w_kn.shape[0])
        return "float" if scheme is None else scheme

    def gather(self, g: GraphBuilder, table: Const, ids: Dyn) -> str:
        scheme = self._scheme(table.param, table.value.shape[1])
        if scheme is None:
            return super().gather(g, table, ids)
        v, d = table.value.shape
        key = weight_key(table, (1,))  # the same key as the tied LM head's matmul
        table_kn = Lazy((d, v), table.value.dtype, lambda: table.array().T)
        b, s, block = self._packed(g, table_kn, table.param, key, scheme)
        if d % block:
            return super().gather(g, table, ids)
        scales_3d = g.reshape(s, [v, d // block, 1])
        rows = g.op("GatherBlockQuantized", [b, ids.name, scales_3d], domain="com.microsoft", bits=scheme.bits,
                    block_size=block, gather_axis=0, quantize_axis=2)
        return g.reshape(rows, list(ids.shape) + [d])

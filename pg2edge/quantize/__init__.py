"""Weight-only quantization: numpy reference schemes, per-parameter recipes, reports, ORT packing.

`schemes` is the ground truth (symmetric int8 per channel / int4 block-wise
fake-quant); `matmul_view` says how each big_vision weight is multiplied;
`recipes` maps parameter names to schemes; `report` measures the weight
error; `ort_pack` lays codes out for onnxruntime's MatMulNBits /
GatherBlockQuantized (import it directly: it is not needed by the rest).
"""

from pg2edge.quantize.matmul_view import MatmulView, is_matmul_weight, matmul_label, matmul_view
from pg2edge.quantize.recipes import (
    BLOCK_SIZES,
    DEFAULT_BLOCK,
    RECIPE_NAMES,
    Recipe,
    fake_quant_param,
    fake_quant_params,
    get_recipe,
    iter_quantized,
    quantize_param,
)
from pg2edge.quantize.report import error_report, write_report
from pg2edge.quantize.schemes import (QuantizedTensor, Scheme, dequantize, dequantize_rows, fake_quant, quantize,
                                      relative_error)

__all__ = [
    "BLOCK_SIZES", "DEFAULT_BLOCK", "RECIPE_NAMES", "MatmulView", "QuantizedTensor", "Recipe", "Scheme",
    "dequantize", "dequantize_rows", "error_report", "fake_quant", "fake_quant_param", "fake_quant_params", "get_recipe",
    "is_matmul_weight", "iter_quantized", "matmul_label", "matmul_view", "quantize", "quantize_param",
    "relative_error", "write_report",
]

"""Single-node ONNX builders for the packing tests: each packed layout checked against onnxruntime.

The exporter builds its own nodes (`pg2edge/export/onnx_quant.py`) over the
shared weights file; these build the same ops with inline initializers, for
one-node models only.
"""

from __future__ import annotations

import numpy as np

from pg2edge.quantize.ort_pack import (ACCURACY_LEVELS, DequantizeLinearWeights, GatherBlockQuantizedWeights,
                                       MatMulNBitsWeights)


def matmul_nbits_names(prefix: str) -> tuple[str, str]:
    """Initializer names (B, scales) that `matmul_nbits_node` gives weight `prefix`."""
    return f"{prefix}.B", f"{prefix}.scales"


def matmul_nbits_node(input_name: str, output_name: str, prefix: str, packed: MatMulNBitsWeights,
                      accuracy_level: int = 0) -> tuple[list, list]:
    """One MatMulNBits node `output = input @ W` and its initializers `{prefix}.B`, `{prefix}.scales`."""
    from onnx import helper, numpy_helper

    if accuracy_level not in ACCURACY_LEVELS:
        raise ValueError(f"accuracy_level must be one of {ACCURACY_LEVELS}, found {accuracy_level}")
    b_name, s_name = matmul_nbits_names(prefix)
    node = helper.make_node("MatMulNBits", [input_name, b_name, s_name], [output_name],
                            name=f"{prefix}/MatMulNBits", domain="com.microsoft", K=packed.k, N=packed.n,
                            bits=packed.bits, block_size=packed.block_size, accuracy_level=accuracy_level)
    inits = [numpy_helper.from_array(packed.b, b_name), numpy_helper.from_array(packed.scales, s_name)]
    return [node], inits


def gather_block_quantized_node(ids_name: str, output_name: str, prefix: str,
                                packed: GatherBlockQuantizedWeights) -> tuple[list, list]:
    """One standalone GatherBlockQuantized node `output = table[ids]` and its initializers."""
    from onnx import helper, numpy_helper

    data_name, s_name = f"{prefix}.data", f"{prefix}.scales"
    node = helper.make_node("GatherBlockQuantized", [data_name, ids_name, s_name], [output_name],
                            name=f"{prefix}/GatherBlockQuantized", domain="com.microsoft", bits=packed.bits,
                            block_size=packed.block_size, gather_axis=packed.gather_axis,
                            quantize_axis=packed.quantize_axis)
    inits = [numpy_helper.from_array(packed.data, data_name), numpy_helper.from_array(packed.scales, s_name)]
    return [node], inits


def tied_gather_nodes(ids_name: str, output_name: str, prefix: str, head_prefix: str,
                      packed: MatMulNBitsWeights, ids_rank: int = 2) -> tuple[list, list]:
    """Embedding lookup reading the tied LM head's MatMulNBits initializers (`head_prefix`) in place.

    Only two small shape constants are added; the codes are shared. `ids_rank`
    is the rank of the token-id input (the output is [*ids.shape, Dt]).
    """
    from onnx import helper, numpy_helper

    if packed.k % packed.block_size:
        raise ValueError(f"embedding width {packed.k} is not a multiple of the block {packed.block_size}")
    b_name, s_name = matmul_nbits_names(head_prefix)
    scales_3d, blocks = f"{prefix}.scales_3d", f"{prefix}.blocks"
    scales_shape = numpy_helper.from_array(np.array([packed.n, packed.n_blocks, 1], np.int64),
                                           f"{prefix}.scales_shape")
    out_shape = numpy_helper.from_array(np.array([0] * ids_rank + [packed.k], np.int64), f"{prefix}.out_shape")
    nodes = [
        helper.make_node("Reshape", [s_name, scales_shape.name], [scales_3d], name=f"{prefix}/ScalesReshape"),
        helper.make_node("GatherBlockQuantized", [b_name, ids_name, scales_3d], [blocks],
                         name=f"{prefix}/GatherBlockQuantized", domain="com.microsoft", bits=packed.bits,
                         block_size=packed.block_size, gather_axis=0, quantize_axis=2),
        helper.make_node("Reshape", [blocks, out_shape.name], [output_name], name=f"{prefix}/OutReshape"),
    ]
    return nodes, [scales_shape, out_shape]


def dequantize_linear_matmul_nodes(input_name: str, output_name: str, prefix: str,
                                   dq: DequantizeLinearWeights) -> tuple[list, list]:
    """`output = input @ DequantizeLinear(q_kn, scale)` (opset 13 per-axis, opset 21 blocked)."""
    from onnx import helper, numpy_helper

    q_name, s_name, w_name = f"{prefix}.q", f"{prefix}.scale", f"{prefix}.w"
    attrs = {"axis": dq.axis} if dq.block_size is None else {"axis": dq.axis, "block_size": dq.block_size}
    nodes = [helper.make_node("DequantizeLinear", [q_name, s_name], [w_name], name=f"{prefix}/DequantizeLinear",
                              **attrs),
             helper.make_node("MatMul", [input_name, w_name], [output_name], name=f"{prefix}/MatMul")]
    return nodes, [numpy_helper.from_array(dq.q_kn, q_name), numpy_helper.from_array(dq.scale, s_name)]

"""Export: graph split, quantized ONNX / TFLite parts, bundle manifest."""

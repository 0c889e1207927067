"""pg2edge: compile PaliGemma 2 into ONNX / TFLite bundles and run them on small devices."""

__version__ = "0.1.0"

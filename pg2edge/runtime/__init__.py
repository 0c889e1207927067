"""On-device runtime: numpy + onnxruntime / ai_edge_litert + sentencepiece + pillow only."""

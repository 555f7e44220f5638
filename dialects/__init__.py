"""IR dialects: `onnx` (high level), `quant` (int8), `npu` (Ember NPU instructions)."""

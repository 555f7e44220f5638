"""Host runtime: pre ONNX -> NPU -> post ONNX."""

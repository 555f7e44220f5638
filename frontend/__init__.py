"""ONNX import into the `onnx` dialect and export back to ONNX."""

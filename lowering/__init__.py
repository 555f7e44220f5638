"""Conversions between dialects (onnx -> quant -> npu)."""

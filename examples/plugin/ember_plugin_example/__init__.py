"""An example of a pass that lives outside Ember: `onnx-op-histogram`."""

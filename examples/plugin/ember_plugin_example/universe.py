"""What the `xdsl.universe` entry point of this package registers."""

from xdsl.universe import Universe


def _op_histogram():
    from ember_plugin_example.op_histogram import OnnxOpHistogramPass

    return OnnxOpHistogramPass


UNIVERSE = Universe(all_passes={"onnx-op-histogram": _op_histogram})

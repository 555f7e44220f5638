"""Run a quantized module end to end: quant ops and the float islands left between them.

After `quantize`, a module holds `quant` ops (run by the reference interpreter,
`ember.interpreters.quant_reference`, which defines their integer semantics) and possibly
`onnx` ops that stayed float (between `quant.dequantize` and `quant.quantize`), which
onnxruntime runs one node at a time. Inputs and outputs are float, keyed by ONNX name.
This is how Ember measures accuracy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from xdsl.dialects.builtin import ModuleOp, TensorType
from xdsl.dialects.func import ReturnOp
from xdsl.interpreter import Interpreter
from xdsl.interpreters.func import FuncFunctions
from xdsl.ir import Operation, SSAValue

from ember.dialects.dense import numpy_from_dense
from ember.dialects.onnx import InitializerOp, OnnxOp, opset_version, value_name
from ember.dialects.quant import Quant
from ember.frontend.onnx_export import graph_function
from ember.frontend.types import attribute_to_onnx, type_to_onnx
from ember.interpreters.quant_reference import QuantFunctions
from ember.support.diagnostics import EmberError

QUANT_OPS = frozenset(Quant.operations)
ORT_IR_VERSION = 10
"""The IR version of the one-node models: new enough for every opset Ember imports,
old enough for the onnxruntime versions Ember supports."""

Observer = Callable[[Operation, Sequence[Any]], None]


class MixedRunner:
    """Runs a module of `quant` and `onnx` ops; build once, run on many inputs."""

    def __init__(self, module: ModuleOp):
        self.function = graph_function(module)
        self.opset = opset_version(module)
        self.interpreter = Interpreter(module)
        self.interpreter.register_implementations(FuncFunctions())
        self.interpreter.register_implementations(QuantFunctions())
        self.input_names = [value_name(a) or f"arg{i}" for i, a in enumerate(self.function.args)]
        names = self.function.attributes.get("onnx.output_names")
        self.output_names = [s.data for s in names.data] if names is not None else None
        self._sessions: dict[Operation, Any] = {}
        self._constants: dict[SSAValue, np.ndarray] = {}

    def run(self, inputs: Mapping[str, np.ndarray], observe: Observer | None = None) -> dict[str, np.ndarray]:
        """The graph outputs for `inputs`; `observe(op, results)` sees every op's results."""
        env = self.bind(inputs)
        for op in self.function.body.block.ops:
            if isinstance(op, ReturnOp):
                outputs = [env[v] for v in op.arguments]
                names = self.output_names or [f"output{i}" for i in range(len(outputs))]
                return dict(zip(names, outputs))
            results = self.step(op, env)
            env.update(zip(op.results, results))
            if observe is not None:
                observe(op, results)
        raise EmberError("the graph function has no return")

    def bind(self, inputs: Mapping[str, np.ndarray]) -> dict[SSAValue, Any]:
        """The environment holding the graph inputs (float32, checked against the model)."""
        env: dict[SSAValue, Any] = {}
        for name, arg in zip(self.input_names, self.function.args):
            if name not in inputs:
                raise EmberError(f"input '{name}' not given")
            value = np.asarray(inputs[name], dtype=np.float32)
            if isinstance(arg.type, TensorType) and value.shape != arg.type.get_shape():
                raise EmberError(f"input '{name}' has shape {value.shape}, the model expects {arg.type.get_shape()}")
            env[arg] = value
        return env

    def step(self, op: Operation, env: dict[SSAValue, Any]) -> Sequence[Any]:
        """The results of one op of the graph function, its operands read from `env`
        (callers that change the module between ops, such as bias correction, drive
        the walk themselves)."""
        if isinstance(op, InitializerOp):
            return (self._constant(op),)
        if type(op) in QUANT_OPS:
            return self.interpreter.run_op(op, tuple(env[v] for v in op.operands))
        if isinstance(op, OnnxOp):
            return self._run_onnx(op, env)
        raise EmberError(f"cannot run '{op.name}': only quant and onnx ops run on the reference path")

    def _constant(self, op: InitializerOp) -> np.ndarray:
        if op.output not in self._constants:
            self._constants[op.output] = numpy_from_dense(op.value)
        return self._constants[op.output]

    def _run_onnx(self, op: OnnxOp, env: dict[SSAValue, Any]) -> list[np.ndarray]:
        slots = op.input_slots()
        if op not in self._sessions:
            self._sessions[op] = _node_session(op, slots, self.opset)
        session = self._sessions[op]
        feeds = {f"i{k}": env[v] for k, v in enumerate(slots) if v is not None}
        return session.run(None, feeds)


def _node_session(op: OnnxOp, slots: Sequence[SSAValue | None], opset: int):
    """An onnxruntime session running the one node `op`."""
    import onnxruntime as ort

    inputs = ["" if v is None else f"i{k}" for k, v in enumerate(slots)]
    outputs = [f"o{k}" for k in range(len(op.results))]
    node = onnx.helper.make_node(op.ONNX_TYPE, inputs, outputs, name=op.node_name or None)
    node.attribute.extend(attribute_to_onnx(k, v) for k, v in op.properties.items() if not k.endswith("SegmentSizes"))

    def info(name: str, value: SSAValue) -> onnx.ValueInfoProto:
        proto = onnx.ValueInfoProto(name=name)
        proto.type.CopyFrom(type_to_onnx(value.type))
        return proto

    graph = onnx.helper.make_graph(
        [node],
        "node",
        [info(f"i{k}", v) for k, v in enumerate(slots) if v is not None],
        [info(name, r) for name, r in zip(outputs, op.results)],
    )
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)], ir_version=ORT_IR_VERSION)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise EmberError(f"node '{op.node_name or op.ONNX_TYPE}': onnxruntime cannot run it ({str(err).splitlines()[0]})") from None


def run_mixed(module: ModuleOp, inputs: Mapping[str, np.ndarray], observe: Observer | None = None) -> dict[str, np.ndarray]:
    """Run a quantized (possibly mixed quant + float) module once."""
    return MixedRunner(module).run(inputs, observe)

"""Helpers for the graph-pass tests: build ONNX graphs, import them, run passes, export,
and compare onnxruntime before and after on real inputs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper
from PIL import Image
from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp, StringAttr
from xdsl.passes import ModulePass

from ember.dialects.onnx import OnnxOp
from ember.frontend.onnx_export import export_model, graph_function
from ember.frontend.onnx_import import import_model, load_onnx

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


class GraphKit:
    """Build, import, transform, export and run small ONNX graphs."""

    shared = SHARED

    @staticmethod
    def model(
        nodes: Sequence[onnx.NodeProto],
        inputs: Mapping[str, tuple[int, Sequence[int]] | Sequence[int]],
        outputs: Sequence[str] | Mapping[str, int],
        initializers: Mapping[str, np.ndarray] | None = None,
        opset: int = 17,
    ) -> onnx.ModelProto:
        """A model; an input is a shape (float32) or `(onnx elem type, shape)`; outputs are
        float32 names, or a name -> onnx elem type mapping."""
        infos = []
        for name, spec in inputs.items():
            elem, shape = spec if isinstance(spec, tuple) and isinstance(spec[0], int) and not isinstance(spec[1], int) else (onnx.TensorProto.FLOAT, spec)
            infos.append(helper.make_tensor_value_info(name, elem, list(shape)))
        graph = helper.make_graph(
            list(nodes),
            "g",
            infos,
            [helper.make_tensor_value_info(n, elem, None) for n, elem in (outputs.items() if isinstance(outputs, Mapping) else ((n, onnx.TensorProto.FLOAT) for n in outputs))],
            [onnx.numpy_helper.from_array(np.asarray(a), n) for n, a in (initializers or {}).items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        return model

    @staticmethod
    def load(name: str) -> onnx.ModelProto:
        return load_onnx(SHARED / "models" / name)

    @staticmethod
    def imported(model: onnx.ModelProto, shapes: Mapping[str, Sequence[int]] | None = None) -> ModuleOp:
        return import_model(model, shapes)

    @staticmethod
    def apply(module: ModuleOp, *passes: ModulePass) -> ModuleOp:
        for one in passes:
            one.apply(Context(), module)
        module.verify()
        return module

    @staticmethod
    def export(module: ModuleOp, part: str = "main") -> onnx.ModelProto:
        model = export_model(module, part)
        onnx.checker.check_model(model)
        return model

    @staticmethod
    def run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, dict(feeds))))

    @staticmethod
    def run_parts(module: ModuleOp, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run pre -> main -> post (the parts the module has) and return every tensor computed."""
        values = dict(feeds)
        for part in ("pre", "main", "post"):
            if any(op.attributes.get("onnx.part") == StringAttr(part) for op in module.ops) or part == "main":
                model = GraphKit.export(module, part)
                values.update(GraphKit.run(model, {i.name: values[i.name] for i in model.graph.input}))
        return values

    @staticmethod
    def op_types(module: ModuleOp, part: str = "main") -> Counter[str]:
        return Counter(op.ONNX_TYPE for op in graph_function(module, part).body.block.ops if isinstance(op, OnnxOp))

    @staticmethod
    def image(height: int, width: int, name: str = "astronaut.png") -> np.ndarray:
        """A real photograph as float32 RGB in [0, 255], `[1, 3, height, width]`."""
        picture = Image.open(SHARED / "images" / name).convert("RGB").resize((width, height), Image.BILINEAR)
        return np.asarray(picture, dtype=np.float32).transpose(2, 0, 1)[None].copy()

    @staticmethod
    def assert_close(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], rtol: float = 1e-5, atol: float = 1e-5) -> None:
        assert set(actual) == set(expected)
        for name, value in expected.items():
            np.testing.assert_allclose(actual[name], value, rtol=rtol, atol=atol, err_msg=name)


@pytest.fixture
def kit() -> type[GraphKit]:
    return GraphKit

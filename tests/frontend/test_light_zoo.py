"""The structural "light" zoo models that onnx ships (ResNet50, DenseNet121, Inception,
ShuffleNet, SqueezeNet, VGG19, ...): IR version 3, opset 9, initializers listed as graph
inputs, weights as ConstantOfShape nodes fed by shape initializers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.backend.test
import onnxruntime as ort
import pytest

from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model, load_onnx

LIGHT = Path(onnx.backend.test.__file__).parent / "data" / "light"
MODELS = sorted(LIGHT.glob("*.onnx"))


def test_the_zoo_is_there() -> None:
    assert len(MODELS) >= 9, f"onnx's light models are missing from {LIGHT}"


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_import_export_check(path: Path) -> None:
    original = load_onnx(path)
    exported = export_model(import_model(original, source=path.name))
    onnx.checker.check_model(exported, full_check=True)

    # Same nodes, in the same order, with the same names and edges.
    assert [(n.op_type, list(n.input), list(n.output)) for n in exported.graph.node] == [
        (n.op_type, list(n.input), list(n.output)) for n in original.graph.node
    ]
    initializers = {t.name for t in original.graph.initializer}
    assert [t.name for t in exported.graph.initializer] == [t.name for t in original.graph.initializer]
    # IR 3 listed the initializers as inputs too; the export (IR 4+) lists real inputs only.
    assert [i.name for i in exported.graph.input] == [i.name for i in original.graph.input if i.name not in initializers]
    assert [o.name for o in exported.graph.output] == [o.name for o in original.graph.output]
    assert exported.ir_version >= 4 and exported.opset_import == original.opset_import


@pytest.mark.parametrize("name", ["light_squeezenet", "light_shufflenet"])
def test_small_zoo_models_compute_the_same(name: str) -> None:
    # The weights are constants, not trained values, but the arithmetic is real:
    # the export must compute exactly what the original does.
    original = load_onnx(LIGHT / f"{name}.onnx")
    exported = export_model(import_model(original, source=name))
    initializers = {t.name for t in original.graph.initializer}
    info = next(i for i in original.graph.input if i.name not in initializers)
    shape = [d.dim_value for d in info.type.tensor_type.shape.dim]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(original.SerializeToString()).run(None, {info.name: x})
    got = ort.InferenceSession(exported.SerializeToString()).run(None, {info.name: x})
    assert all(np.array_equal(a, b) for a, b in zip(want, got))

"""The differential properties checked on every generated model.

A property takes a `GeneratedModel` and raises (an `AssertionError` or whatever the
compiler raised) when Ember gets it wrong. `PROPERTIES` is the registry that the test
suite (`test_float_properties.py`, small budget) and `benchmarks/fuzz.py` (long budget)
both run. This is the extension point for the later compiler stages: the property
"quantize -> lower -> simulate equals the reference interpreter bit for bit" is one more
`register(...)`-decorated function of a `GeneratedModel`, listing the passes it needs in
`requires`; both runners pick it up without change.

Float properties compare onnxruntime on the original model and on the exported result:
bit for bit where Ember promises losslessness (import/export, MLIR text round trip), to
rtol 1e-4 / atol 1e-5 where a pass re-associates float arithmetic.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from xdsl.context import Context
from xdsl.dialects.builtin import ArrayAttr, DictionaryAttr, ModuleOp
from xdsl.parser import Parser
from xdsl.passes import PassPipeline
from xdsl.universe import Universe

from ember.dialects.onnx import InitializerOp, OnnxOp
from ember.frontend.onnx_export import NORMALIZATION, export_model, graph_function
from ember.frontend.onnx_import import import_model
from ember.support.diagnostics import EmberError
from ember.tools import ember_opt

from graphs import GeneratedModel
from npu_boundary import assert_simulator_matches_reference

RTOL, ATOL = 1e-4, 1e-5


@dataclass(frozen=True)
class Property:
    name: str
    check: Callable[[GeneratedModel], None]
    requires: tuple[str, ...] = field(default=())
    """Passes that must be registered for the property to apply."""

    def missing(self) -> list[str]:
        """The required passes not (yet) registered."""
        return [p for p in self.requires if p not in Universe.get_multiverse().all_passes]


PROPERTIES: dict[str, Property] = {}


def register(name: str, requires: tuple[str, ...] = ()) -> Callable[[Callable[[GeneratedModel], None]], Callable[[GeneratedModel], None]]:
    """Add a property to `PROPERTIES` under `name`."""

    def add(check: Callable[[GeneratedModel], None]) -> Callable[[GeneratedModel], None]:
        PROPERTIES[name] = Property(name, check, requires)
        return check

    return add


# --------------------------------------------------------------------------- helpers


def run(model: onnx.ModelProto, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """onnxruntime's outputs by name (feeds the model does not take are ignored)."""
    options = ort.SessionOptions()
    # The oracle runs the graph as written. onnxruntime's own graph rewrites are not what
    # is under test, and its transpose optimizer breaks valid graphs: Transpose -> Resize
    # (linear) fails in onnxruntime 1.31 once value_info gives the shapes.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted})))


def imported(generated: GeneratedModel) -> ModuleOp:
    return import_model(generated.model, source="fuzz")


def apply_pipeline(module: ModuleOp, spec: str) -> ModuleOp:
    """Run an `ember-opt`-style pipeline on `module` and verify the result."""
    PassPipeline.parse_spec(Universe.get_multiverse().all_passes, spec).apply(_context(), module)
    module.verify()
    return module


def _context() -> Context:
    ctx = Context()
    for name, dialect in Universe.get_multiverse().all_dialects.items():
        ctx.register_dialect(name, dialect)
    return ctx


def exported(module: ModuleOp, part: str = "main") -> onnx.ModelProto:
    model = export_model(module, part)
    onnx.checker.check_model(model)
    return model


def assert_same(actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], exact: bool) -> None:
    assert set(actual) == set(expected), f"outputs {sorted(actual)} != {sorted(expected)}"
    for name, value in expected.items():
        assert actual[name].shape == value.shape, f"{name}: shape {actual[name].shape} != {value.shape}"
        if exact:
            np.testing.assert_array_equal(actual[name], value, err_msg=name)
        else:
            np.testing.assert_allclose(actual[name], value, rtol=RTOL, atol=ATOL, err_msg=name)


def _check_pass(generated: GeneratedModel, spec: str) -> None:
    expected = run(generated.model, generated.feeds)
    module = apply_pipeline(imported(generated), spec)
    assert_same(run(exported(module), generated.feeds), expected, exact=False)


# --------------------------------------------------------------------------- lossless


@register("import-export")
def import_export_exact(generated: GeneratedModel) -> None:
    """import -> export gives bit-identical outputs."""
    assert_same(run(exported(imported(generated)), generated.feeds), run(generated.model, generated.feeds), exact=True)


@register("import-unsorted")
def import_unsorted_exact(generated: GeneratedModel) -> None:
    """A file whose nodes are in reverse order imports (sorted again) and exports to a
    model with bit-identical outputs."""
    shuffled = onnx.ModelProto()
    shuffled.CopyFrom(generated.model)
    del shuffled.graph.node[:]
    shuffled.graph.node.extend(reversed(generated.model.graph.node))
    module = import_model(shuffled, source="fuzz")
    assert_same(run(exported(module), generated.feeds), run(generated.model, generated.feeds), exact=True)


@register("mlir-round-trip")
def mlir_round_trip_exact(generated: GeneratedModel) -> None:
    """import -> MLIR text -> parse -> export gives bit-identical outputs."""
    text = str(imported(generated))
    module = Parser(_context(), text).parse_module()
    module.verify()
    assert_same(run(exported(module), generated.feeds), run(generated.model, generated.feeds), exact=True)


# --------------------------------------------------------------------------- float passes


def _single_pass(spec: str) -> None:
    name = spec.split("{")[0]

    @register(name, requires=(name,))
    def check(generated: GeneratedModel) -> None:
        _check_pass(generated, spec)


for _spec in ("onnx-constant-fold", "onnx-shape-inference", "canonicalize", "fold-batchnorm{remarks=false}"):
    _single_pass(_spec)


@register("graph-pipeline", requires=("fold-batchnorm",))
def graph_pipeline(generated: GeneratedModel) -> None:
    """The passes composed as a deployment runs them."""
    _check_pass(generated, "onnx-constant-fold,onnx-shape-inference,canonicalize,fold-batchnorm{remarks=false},canonicalize")


@register("extract-normalization", requires=("extract-normalization",))
def extract_normalization(generated: GeneratedModel) -> None:
    """original(x) == stripped((x - mean) / std) for each input the pass normalized."""
    expected = run(generated.model, generated.feeds)
    module = apply_pipeline(imported(generated), "extract-normalization{remarks=false}")
    func = graph_function(module)
    feeds = dict(generated.feeds)
    for arg, entry in zip(func.body.block.args, func.arg_attrs.data if func.arg_attrs else ()):
        record = entry.data.get(NORMALIZATION) if isinstance(entry, DictionaryAttr) else None
        if record is None:
            continue
        name = entry.data["onnx.name"].data
        fields = {k: [f.value.data for f in v.data] if isinstance(v, ArrayAttr) else v.value.data for k, v in record.data.items()}
        shape = [1] * len(arg.type.get_shape())
        if "axis" in fields:
            shape[fields["axis"]] = -1
        x = feeds[name].astype(np.float64)
        if x.shape != tuple(arg.type.get_shape()):
            raise AssertionError(f"input {name}: shape {list(x.shape)} became {list(arg.type.get_shape())} without a stripped Transpose")
        feeds[name] = ((x - np.reshape(fields["mean"], shape)) / np.reshape(fields["std"], shape)).astype(np.float32)
    stripped = exported(module)
    metadata = {p.key: json.loads(p.value) for p in stripped.metadata_props if p.key.startswith("ember.normalization.")}
    assert len(metadata) == sum(1 for e in func.arg_attrs.data if NORMALIZATION in e.data), "normalization records missing from the ONNX metadata"
    assert_same(run(stripped, feeds), expected, exact=False)


@register("autocrop", requires=("autocrop",))
def autocrop_chain(generated: GeneratedModel) -> None:
    """pre -> main -> post, each part exported and run by onnxruntime, chained through
    the boundary tensors by name, reproduces the original outputs. A graph with nothing
    for the NPU is refused with an `EmberError`, which is a valid answer."""
    expected = run(generated.model, generated.feeds)
    try:
        module = apply_pipeline(imported(generated), "autocrop{remarks=false}")
    except EmberError:
        return
    present = {op.attributes["onnx.part"].data for op in module.ops if "onnx.part" in op.attributes} | {"main"}
    tensors = dict(generated.feeds)
    for part in ("pre", "main", "post"):
        if part in present:
            tensors.update(run(exported(module, part), tensors))
    assert_same({k: tensors[k] for k in expected}, expected, exact=False)


# --------------------------------------------------------------------------- the tool


@register("ember-opt")
def ember_opt_never_crashes(generated: GeneratedModel) -> None:
    """`ember-opt` on the model with every registered float pass exits 0, or 1 with one
    line naming what it cannot handle; never an internal error."""
    passes = [p for p in ("onnx-constant-fold", "onnx-shape-inference", "canonicalize", "fold-batchnorm{remarks=false}", "extract-normalization{remarks=false}", "autocrop{remarks=false}")
              if p.split("{")[0] in Universe.get_multiverse().all_passes]
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "model.onnx", Path(tmp) / "out.onnx"
        onnx.save(generated.model, source)
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            code = ember_opt.main([str(source), "-p", ",".join(passes), "-t", "onnx", "-o", str(target)])
        message = stderr.getvalue()
        assert "internal error" not in message, message
        if code == 0:
            onnx.checker.check_model(onnx.load(target))
        else:
            assert code == 1 and len(message.strip().splitlines()) == 1, f"exit {code}: {message}"
            assert not target.exists(), "a failing run left an output file"


# --------------------------------------------------------------------------- quantized


def _node_names(model: onnx.ModelProto) -> set[str]:
    """Every name an error may use for a place in the model: nodes and tensors."""
    names = {n.name for n in model.graph.node} | {t for n in model.graph.node for t in (*n.input, *n.output)}
    return {name for name in names if name}


def _assert_clear_error(err: EmberError, generated: GeneratedModel) -> None:
    message = str(err)
    assert len(message.strip().splitlines()) == 1, f"the error is not one line: {message!r}"
    assert any(name in message for name in _node_names(generated.model)), f"the error names no node or tensor: {message}"


@register("quantized-bit-exact", requires=("autocrop", "calibrate", "quantize", "lower-quant-to-npu", "npu-allocate", "npu-schedule"))
def quantized_bit_exact(generated: GeneratedModel) -> None:
    """autocrop -> calibrate (minmax, on the model's own feeds) -> quantize ->
    lower-quant-to-npu{arch=ember16} -> npu-allocate -> npu-schedule -> emit: the simulator's
    int8 outputs equal the quant reference interpreter's bit for bit, on random int8 inputs
    at the binary's boundary. Every node autocrop keeps is quantized (none stays float). A
    graph with nothing for the NPU, or one the NPU cannot take, is refused with a one-line
    `EmberError` naming a node or tensor: a valid answer."""
    from ember.frontend.samples import SampleSet
    from ember.lowering.npu_to_ebin import compile_to_ebin
    from ember.lowering.quant_to_npu import main_function
    from ember.passes.calibrate import calibrate, input_specs, record
    from ember.passes.quantize import QuantizePass
    from ember.target.ebin import to_bytes

    try:
        module = apply_pipeline(imported(generated), "autocrop{remarks=false}")
    except EmberError:
        return
    present = {op.attributes["onnx.part"].data for op in module.ops if "onnx.part" in op.attributes}
    tensors = dict(generated.feeds)
    if "pre" in present:
        tensors.update(run(exported(module, "pre"), tensors))
    sample = {spec.name: tensors[spec.name] for spec in input_specs(module)}
    record(module, calibrate(module, SampleSet("fuzz", [sample], lambda s: s), "minmax"))
    QuantizePass().apply(_context(), module)
    # autocrop keeps on the NPU only what `quantize` takes, so the main part has no float
    # node left: compiling it never ends in "compile with --autocrop" for that reason.
    floats = [op for op in main_function(module).body.block.ops if isinstance(op, OnnxOp) and not isinstance(op, InitializerOp)]
    assert not floats, f"quantize left float nodes in the main part autocrop made: {', '.join(op.ONNX_TYPE for op in floats)}"
    quant_part = ModuleOp([main_function(module).clone()])
    try:
        data = to_bytes(compile_to_ebin(module, "ember16"))
    except EmberError as err:
        _assert_clear_error(err, generated)
        return
    assert_simulator_matches_reference(quant_part, data, seed=len(data), source="fuzz.ebin")

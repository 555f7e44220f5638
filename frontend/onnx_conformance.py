"""Conformance of import -> export on onnx's own backend node test cases.

Each case of `onnx.backend.test.case.node` (one small model per op and variant, with
input and expected output tensors) goes through `import_model` and `export_model`; the
export must then compute exactly what the original computes:

- onnxruntime runs both models; their outputs must be bit-identical (NaNs included).
- Where onnxruntime cannot run the original (an IR version or opset newer than it
  knows, an op or type it lacks), onnx's reference evaluator takes its place.
- A case neither can run on the original, or whose original gives different outputs on
  two runs (random ops without a seed), is not applicable: it says nothing about Ember.

Exactness against the original is the pass criterion. Whether the original's outputs
match onnx's expected outputs (onnx's backend tolerance, rtol 1e-3 and atol 1e-7) is
recorded too: a miss there is the runtime's deviation, which the export reproduces.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from ember.frontend.onnx_export import export_model
from ember.frontend.onnx_import import import_model

RTOL = 1e-3
ATOL = 1e-7

Runner = Callable[[onnx.ModelProto, Sequence[Any]], list[Any]]


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one backend node case."""

    name: str
    status: str
    """'passed', 'failed' or 'not applicable'."""
    runtime: str = ""
    """Which runtime judged the case: 'onnxruntime' or 'onnx.reference'."""
    detail: str = ""
    """Why the case failed or is not applicable (one line)."""
    matches_expected: bool = False
    """The original's outputs match onnx's expected outputs within its tolerance."""


@dataclass
class Summary:
    """Counts over a set of case results."""

    results: list[CaseResult] = field(default_factory=list)

    @property
    def tried(self) -> list[CaseResult]:
        return [r for r in self.results if r.status != "not applicable"]

    @property
    def passed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "passed"]

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if r.status == "failed"]

    def report(self) -> str:
        """A few lines: the count, per runtime, and why cases were not applicable."""
        by_runtime = Counter(r.runtime for r in self.passed)
        expected = sum(r.matches_expected for r in self.passed)
        na = Counter(r.detail.split(":")[0] for r in self.results if r.status == "not applicable")
        lines = [
            f"onnx backend node cases: {len(self.passed)} passed / {len(self.tried)} tried "
            f"({len(self.results)} cases, {len(self.results) - len(self.tried)} not applicable)",
            "  passed by runtime: " + ", ".join(f"{k} {v}" for k, v in sorted(by_runtime.items())),
            f"  of the passed, the original also matches onnx's expected outputs in {expected}",
            "  not applicable: " + ", ".join(f"{k} {v}" for k, v in na.most_common()),
        ]
        lines.extend(f"  FAILED {r.name} [{r.runtime}]: {r.detail}" for r in self.failed)
        return "\n".join(lines)


def node_cases() -> list:
    """onnx's backend node test cases (`TestCase` tuples), sorted by name."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the generators overflow casts on purpose
        return sorted(collect_testcases(None), key=lambda case: case.name)


def run_onnxruntime(model: onnx.ModelProto, inputs: Sequence[Any]) -> list[Any]:
    """The outputs of `model` under onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors come back as exceptions; keep stderr quiet
    options.intra_op_num_threads = 1  # the cases are tiny: thread pools cost more than they give
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {info.name: _feed(value) for info, value in zip(session.get_inputs(), inputs)}
    return session.run(None, feeds)


def run_reference(model: onnx.ModelProto, inputs: Sequence[Any]) -> list[Any]:
    """The outputs of `model` under onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    evaluator = ReferenceEvaluator(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(evaluator.run(None, {name: _feed(value) for name, value in zip(evaluator.input_names, inputs)}))


RUNTIMES: tuple[tuple[str, Runner], ...] = (("onnxruntime", run_onnxruntime), ("onnx.reference", run_reference))


_RANDOM_OPS = {"Bernoulli", "Multinomial", "RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}


def _unseeded_random(model: onnx.ModelProto) -> bool:
    """Whether the graph draws random numbers without a seed: two runs may agree by chance."""
    return any(n.op_type in _RANDOM_OPS and all(a.name != "seed" for a in n.attribute) for n in model.graph.node)


def check_case(case) -> CaseResult:
    """Import and export one case and compare the export with the original."""
    if _unseeded_random(case.model):
        return CaseResult(case.name, "not applicable", "", "nondeterministic: a random op without a seed")
    runtime, original = "", None
    for runtime, runner in RUNTIMES:
        try:
            original = [runner(case.model, inputs) for inputs, _ in case.data_sets]
            again = [runner(case.model, inputs) for inputs, _ in case.data_sets]
        except Exception:  # noqa: BLE001 - any failure on the original means "cannot run it"
            original = None
            continue
        if not identical(original, again):
            return CaseResult(case.name, "not applicable", runtime, "nondeterministic: two runs of the original differ")
        break
    if original is None:
        return CaseResult(case.name, "not applicable", "", "no runtime runs the original")
    expected = all(close(outputs, wanted) for outputs, (_, wanted) in zip(original, case.data_sets))
    try:
        exported = export_model(import_model(case.model, source=case.name))
    except Exception as err:  # noqa: BLE001 - reported per case, with its message
        return CaseResult(case.name, "failed", runtime, f"import/export: {type(err).__name__}: {_first_line(err)}", expected)
    try:
        outputs = [dict(RUNTIMES)[runtime](exported, inputs) for inputs, _ in case.data_sets]
    except Exception as err:  # noqa: BLE001
        return CaseResult(case.name, "failed", runtime, f"the export does not run: {_first_line(err)}", expected)
    if not identical(original, outputs):
        return CaseResult(case.name, "failed", runtime, "the export's outputs differ from the original's", expected)
    return CaseResult(case.name, "passed", runtime, "", expected)


def run_cases(cases: Iterable) -> Summary:
    """Check every case."""
    return Summary([check_case(case) for case in cases])


def identical(a: Any, b: Any) -> bool:
    """Outputs (tensors, sequences, maps, optionals) equal bit for bit, dtype and shape
    included; NaN equals NaN."""
    if isinstance(a, list | tuple):
        return isinstance(b, list | tuple) and len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(identical(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is b
    x, y = np.asarray(a), np.asarray(b)
    if x.dtype != y.dtype or x.shape != y.shape:
        return False
    if x.dtype.kind in "fc":
        # Bit patterns, so -0.0 differs from 0.0; NaNs only need to sit at the same places.
        nan = np.isnan(x)
        bits = np.dtype(f"u{x.dtype.itemsize // (2 if x.dtype.kind == 'c' else 1)}")
        return bool(np.array_equal(nan, np.isnan(y)) and np.array_equal(x[~nan].view(bits), y[~nan].view(bits)))
    if x.dtype.kind == "V":  # float8 / int4 types that numpy holds as raw bytes
        return x.tobytes() == y.tobytes()
    return bool(np.array_equal(x, y))


def close(outputs: Any, expected: Any) -> bool:
    """onnx's backend comparison: numbers within rtol 1e-3 / atol 1e-7, the rest equal."""
    if isinstance(expected, list | tuple):
        return isinstance(outputs, list | tuple) and len(outputs) == len(expected) and all(close(o, e) for o, e in zip(outputs, expected))
    if isinstance(expected, dict):
        return isinstance(outputs, dict) and outputs.keys() == expected.keys() and all(close(outputs[k], expected[k]) for k in expected)
    if expected is None or outputs is None:
        return expected is outputs
    got, want = np.asarray(outputs), np.asarray(expected)
    if got.shape != want.shape:
        return False
    if want.dtype.kind in "fc" and got.dtype.kind in "fc":
        return bool(np.allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True))
    try:
        return bool(np.array_equal(got, want))
    except (TypeError, ValueError):
        return False


def _feed(value: Any) -> Any:
    # Some cases give scalars as numpy scalars; the runtimes want 0-d arrays.
    return np.asarray(value) if isinstance(value, np.generic) else value


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else ""

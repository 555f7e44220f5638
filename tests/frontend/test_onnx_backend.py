"""onnx's backend node test cases through import -> export (see ember.frontend.onnx_conformance).

The ~1900 cases run in a handful of groups, so that a failure names every failing case
of its group at once and the suite stays fast. The last test prints the conformance
count (run pytest with -s to see it) and guards it against a silent drop.
"""

from __future__ import annotations

import functools

import pytest

from ember.frontend.onnx_conformance import Summary, check_case, close, identical, node_cases

GROUPS = 8


@functools.cache
def _cases() -> list:
    return node_cases()


@functools.cache
def _group(index: int) -> Summary:
    return Summary([check_case(case) for case in _cases()[index::GROUPS]])


@pytest.mark.parametrize("group", range(GROUPS))
def test_node_cases_round_trip_exactly(group: int) -> None:
    summary = _group(group)
    assert not summary.failed, "\n".join(f"{r.name} [{r.runtime}]: {r.detail}" for r in summary.failed)


def test_conformance_count() -> None:
    summary = Summary([r for group in range(GROUPS) for r in _group(group).results])
    print("\n" + summary.report())
    assert len(summary.results) == len(_cases())
    assert len(summary.passed) == len(summary.tried)
    # onnxruntime 1.31 and onnx's reference evaluator run 1692 of onnx 1.23's 1884 cases;
    # a big drop means the harness stopped running cases, not that they pass.
    assert len(summary.tried) >= 1500
    assert sum(r.runtime == "onnxruntime" for r in summary.passed) >= 1300


def test_comparison_is_bit_exact() -> None:
    import numpy as np

    x = np.array([1.0, np.nan, -0.0], dtype=np.float32)
    assert identical([x], [x.copy()])
    assert not identical([x], [np.array([1.0, np.nan, 0.0], dtype=np.float32)])  # -0.0 vs 0.0
    assert not identical([x], [x.astype(np.float64)])
    assert not identical([x], [np.nextafter(x, np.float32(2))])
    assert identical([[x, x]], [[x, x]]) and not identical([[x, x]], [[x]])
    assert close([x], [x * np.float32(1 + 1e-5)]) and not close([x], [x * np.float32(1 + 1e-2)])

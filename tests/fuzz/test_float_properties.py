"""Differential fuzzing with a small budget: every property of `properties.py` on 25
generated models each, derandomized so CI sees the same graphs every run.

The long budget, with reproducers saved as `.onnx` files, is `benchmarks/fuzz.py`.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from graphs import GeneratedModel, models
from properties import PROPERTIES

SMALL_BUDGET = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_property(name: str) -> None:
    prop = PROPERTIES[name]
    assert not (missing := prop.missing()), f"pass {', '.join(missing)} is not registered"

    @SMALL_BUDGET
    @given(models())
    def check(generated: GeneratedModel) -> None:
        prop.check(generated)

    check()


@SMALL_BUDGET
@given(models(min_blocks=3))
def test_generated_models_cover_the_op_set(generated: GeneratedModel) -> None:
    """Every generated model is valid (checked with full shape inference) and made of the
    blocks it says; the op types used are ones Ember's float pipeline supports."""
    supported = {
        "Conv", "ConvTranspose", "BatchNormalization", "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
        "LeakyRelu", "Tanh", "Add", "Mul", "Sub", "Div", "Cast", "Concat", "MaxPool", "AveragePool",
        "GlobalAveragePool", "Resize", "Reshape", "Transpose", "Flatten", "Gemm", "MatMul", "Shape", "Gather",
        "Identity", "Dropout",
    }  # fmt: skip
    assert len(generated.blocks) >= 3
    assert {node.op_type for node in generated.model.graph.node} <= supported

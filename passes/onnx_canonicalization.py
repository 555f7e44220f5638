"""Canonicalization patterns of the `onnx` dialect, used by xDSL's `canonicalize`."""

from __future__ import annotations

from xdsl.ir import SSAValue
from xdsl.pattern_rewriter import PatternRewriter, RewritePattern, op_type_rewrite_pattern

from ember.dialects.onnx import OnnxOp


def forwarded_value(op: OnnxOp) -> SSAValue | None:
    """The input that `Identity(x)` or an inference-mode `Dropout(x)` (mask unused)
    stands for, or None when `op` is neither."""
    if op.ONNX_TYPE not in ("Identity", "Dropout"):
        return None
    slots = op.input_slots()
    if op.ONNX_TYPE == "Dropout":
        if len(op.results) > 1 and op.results[1].uses:
            return None
        if len(slots) > 2 and slots[2] is not None:
            return None  # a training_mode input may turn dropout on
    source = slots[0]
    if source is None or source.type != op.results[0].type:
        return None
    return source


class ForwardIdentityLike(RewritePattern):
    """Replace `Identity` and inference `Dropout` by their input."""

    @op_type_rewrite_pattern
    def match_and_rewrite(self, op: OnnxOp, rewriter: PatternRewriter) -> None:
        if (source := forwarded_value(op)) is not None:
            rewriter.replace_op(op, [], [source] + [None] * (len(op.results) - 1))

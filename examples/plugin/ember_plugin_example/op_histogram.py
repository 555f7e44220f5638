"""`onnx-op-histogram`: print how many ops of each ONNX type the graph holds (stderr);
the IR is unchanged. A template for an out-of-tree pass."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass

from xdsl.context import Context
from xdsl.dialects.builtin import ModuleOp
from xdsl.passes import ModulePass

from ember.dialects.onnx import OnnxOp


@dataclass(frozen=True)
class OnnxOpHistogramPass(ModulePass):
    """Count the ONNX ops by type; `top` limits the lines printed."""

    name = "onnx-op-histogram"

    top: int = 10

    def apply(self, ctx: Context, op: ModuleOp) -> None:
        counts = Counter(o.ONNX_TYPE for o in op.walk() if isinstance(o, OnnxOp))
        for onnx_type, count in counts.most_common(self.top):
            print(f"onnx-op-histogram: {onnx_type} {count}", file=sys.stderr)

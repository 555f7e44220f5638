"""Print the conformance count of import -> export on onnx's backend node test cases.

    python benchmarks/conformance.py [-v]

Passed / tried: a tried case is one that onnxruntime (or, failing that, onnx's reference
evaluator) runs on the original model; it passes when the exported model gives the same
outputs bit for bit. `-v` also lists the cases that are not applicable, with the reason.
"""

from __future__ import annotations

import sys
import time

from ember.frontend.onnx_conformance import node_cases, run_cases


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    summary = run_cases(node_cases())
    print(summary.report())
    if "-v" in argv:
        for result in summary.results:
            if result.status == "not applicable":
                print(f"  n/a {result.name}: {result.detail}")
    print(f"  ({time.perf_counter() - start:.1f} s)")
    return 1 if summary.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

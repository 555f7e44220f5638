"""Differential fuzzing of Ember with a long budget.

    python benchmarks/fuzz.py --examples 1000 --seed 0 --out fuzz-out [--property NAME ...]

Runs every property of `tests/fuzz/properties.py` (the ones the test suite runs with a
small budget) on `--examples` random models from `tests/fuzz/graphs.py`. Hypothesis
shrinks each distinct failure (exception type and the line that raised it) to a small
graph; the smallest failing model of each is saved as `DIR/<property>-<n>.onnx` with its
inputs in `DIR/<property>-<n>.npz`, and its path printed with the error. The exit code
is 1 when anything failed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from hypothesis import HealthCheck, given, seed, settings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))

from graphs import GeneratedModel, models  # noqa: E402
from properties import PROPERTIES, Property  # noqa: E402


@dataclass
class Failure:
    property: str
    error: str
    model: GeneratedModel

    @property
    def size(self) -> tuple[int, int]:
        return len(self.model.model.graph.node), self.model.model.ByteSize()


def _origin(err: BaseException) -> str:
    """Where the error was raised (what hypothesis also uses to tell bugs apart)."""
    frame = traceback.extract_tb(err.__traceback__)[-1]
    return f"{type(err).__name__} at {Path(frame.filename).name}:{frame.lineno}"


def fuzz(prop: Property, examples: int, start_seed: int) -> list[Failure]:
    """Run one property; the smallest failing model of each distinct failure."""
    smallest: dict[str, Failure] = {}
    tried = 0
    begin = time.perf_counter()

    @seed(start_seed)
    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=True,
        print_blob=False,
    )
    @given(models())
    def check(generated: GeneratedModel) -> None:
        nonlocal tried
        tried += 1
        if tried % 50 == 0:
            print(f"  {prop.name}: {tried} graphs run ({time.perf_counter() - begin:.0f} s), {len(smallest)} failures", flush=True)
        try:
            prop.check(generated)
        except Exception as err:
            first = (str(err).strip().splitlines() or [""])[0][:200]
            failure = Failure(prop.name, f"{type(err).__name__}: {first}", generated)
            key = _origin(err)
            if key not in smallest or failure.size < smallest[key].size:
                smallest[key] = failure
            raise

    try:
        check()
    except Exception:  # noqa: BLE001 - the failures are recorded in `smallest`
        pass
    print(f"{prop.name}: {tried} graphs run in {time.perf_counter() - begin:.0f} s, {len(smallest)} distinct failures", flush=True)
    return list(smallest.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500, help="graphs per property")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("fuzz-out"), help="folder for the reproducers")
    parser.add_argument("--property", action="append", choices=sorted(PROPERTIES), help="run only these (repeatable)")
    args = parser.parse_args(argv)
    failures: list[Failure] = []
    for name in args.property or list(PROPERTIES):
        prop = PROPERTIES[name]
        if missing := prop.missing():
            print(f"{name}: skipped, pass {', '.join(missing)} is not registered")
            continue
        failures += fuzz(prop, args.examples, args.seed)
    if failures:
        args.out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure.property] = counts.get(failure.property, 0) + 1
        stem = args.out / f"{failure.property}-{counts[failure.property]}"
        onnx.save(failure.model.model, stem.with_suffix(".onnx"))
        np.savez(stem.with_suffix(".npz"), **failure.model.feeds)
        print(f"FAIL {failure.property}: {failure.error}\n     reproducer {stem.with_suffix('.onnx')} ({failure.size[0]} nodes, blocks {failure.model.blocks})")
    print(f"{len(failures)} distinct failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

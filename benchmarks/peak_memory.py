"""Peak memory of compiling and simulating the largest model, beside onnxruntime's.

Each step runs in its own child process, and its peak resident set size is the child's
`ru_maxrss` (from `os.wait4`), so the figures do not mix:
- `ember-compile` of the PP-OCRv4 detector (autocrop, equalization, a few calibration photographs),
- `ember-sim` running the binary it wrote,
- onnxruntime float32 running the original model on the same input size.

    python benchmarks/peak_memory.py [--size 640] [--calib-images 3] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MODEL = SHARED / "models" / "ppocrv4_det.onnx"
CALIBRATION = ["astronaut.png", "page.png", "coins.png", "rocket.png", "camera.png"]

_ORT_RUN = """
import sys, numpy as np, onnxruntime as ort
size = int(sys.argv[2])
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
session.run(None, {session.get_inputs()[0].name: x})
"""


def peak_rss_mib(command: list[str]) -> float:
    """Run `command` to completion and return its peak resident set size in MiB."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    stderr = process.stderr.read().decode() if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{stderr}")
    return usage.ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=640)
    parser.add_argument("--calib-images", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="keep the compiled artifacts here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="ember-mem-"))
    calib = work / "calib"
    calib.mkdir(parents=True, exist_ok=True)
    for name in CALIBRATION[: args.calib_images]:
        (calib / name).write_bytes((SHARED / "images" / name).read_bytes())
    out = work / "det"
    bin_dir = Path(sys.executable).parent
    compile_mib = peak_rss_mib([
        str(bin_dir / "ember-compile"), str(MODEL), "--input-shape", f"x=1,3,{args.size},{args.size}",
        "--autocrop", "--equalize", "--calib", str(calib), "-o", str(out),
    ])  # fmt: skip

    from ember.target import ebin

    binary = next(out.glob("*.ebin"))
    loaded = ebin.load(binary)
    inputs = []
    for entry in loaded.iodesc["inputs"]:
        array = np.random.default_rng(0).integers(-128, 128, size=entry["shape"]).astype(entry["dtype"])
        path = work / f"{entry['name'].replace('/', '_')}.npy"
        np.save(path, array)
        inputs += ["--input", f"{entry['name']}={path}"]
    sim_mib = peak_rss_mib([str(bin_dir / "ember-sim"), str(binary), *inputs, "--output-dir", str(work / "sim")])
    ort_mib = peak_rss_mib([sys.executable, "-c", _ORT_RUN, str(MODEL), str(args.size)])

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"PP-OCRv4 detector {args.size}x{args.size}, {args.calib_images} calibration images")
    print("| step | peak RSS (MiB) | vs onnxruntime |")
    print("|---|---|---|")
    for step, mib in (("ember-compile", compile_mib), ("ember-sim (one inference)", sim_mib), ("onnxruntime float32 (one inference)", ort_mib)):
        print(f"| {step} | {mib:.0f} | {mib / ort_mib:.2f}x |")


if __name__ == "__main__":
    main()

"""Runs every FileCheck test under tests/filecheck through lit, one pytest case per file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent / "filecheck"
CASES = sorted(p for p in ROOT.rglob("*.mlir"))


@pytest.mark.parametrize("case", CASES, ids=[str(p.relative_to(ROOT)) for p in CASES])
def test_filecheck(case: Path) -> None:
    lit = shutil.which("lit") or str(Path(sys.executable).with_name("lit"))
    done = subprocess.run([lit, "-v", str(case)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]

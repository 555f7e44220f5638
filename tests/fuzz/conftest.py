"""The fuzzing helpers (`graphs`, `properties`) are plain modules beside the tests; with
pytest's importlib import mode their folder must be on `sys.path` for the tests (and
`benchmarks/fuzz.py` adds it the same way)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

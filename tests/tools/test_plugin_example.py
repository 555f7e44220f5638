"""The plugin example of examples/plugin registers a pass through `xdsl.universe` that
ember-opt runs, without installing anything: the test puts the package on sys.path and
adds its entry point to the ones xDSL discovers."""

from __future__ import annotations

import importlib.metadata
from importlib.metadata import EntryPoint
from pathlib import Path

from ember.tools.ember_opt import main as ember_opt

PLUGIN = Path(__file__).resolve().parents[2] / "examples" / "plugin"
MODEL = PLUGIN.parent / "models" / "ppocr_mobile_v2_cls.onnx"


def test_plugin_pass_runs_in_ember_opt(monkeypatch, capsys, tmp_path):
    monkeypatch.syspath_prepend(str(PLUGIN))
    discovered = importlib.metadata.entry_points

    def with_plugin(**selection):
        found = list(discovered(**selection))
        if selection.get("group") == "xdsl.universe":
            found.append(EntryPoint("ember_plugin_example", "ember_plugin_example.universe:UNIVERSE", "xdsl.universe"))
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", with_plugin)
    assert ember_opt([str(MODEL), "--input-shape", "x=1,3,48,192", "-p", "onnx-op-histogram{top=3}", "-o", str(tmp_path / "m.mlir")]) == 0
    assert "onnx-op-histogram: Conv " in capsys.readouterr().err

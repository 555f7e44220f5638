"""The model script: every command, and errors that point at line and column."""

from __future__ import annotations

import pytest

from ember.frontend.model_script import InputConversion, Normalization, load_model_script, parse_model_script
from ember.support.diagnostics import EmberError

SCRIPT = """\
# PP-OCRv4 detector deployment
normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
input_conversion(bgr, input=x)   # camera frames arrive as BGR
crop(inputs=[x], outputs=[sigmoid_0.tmp_0, "head/out:0"])

quantization(method=percentile, percentile=99.99)
equalization(on)
precision(conv_last, float)
precision([a, b], float)
precision(b, int8)
precision([stem, "block1.*", a], int16)
calibration(size=32)
"""


def test_every_command() -> None:
    script = parse_model_script(SCRIPT, "deploy.ems")
    assert script.normalizations == [
        Normalization((123.675, 116.28, 103.53), (58.395, 57.12, 57.375), None, "normalization1")
    ]
    assert script.conversions == [InputConversion("bgr", "x")]
    assert script.crop_inputs == ["x"]
    assert script.crop_outputs == ["sigmoid_0.tmp_0", "head/out:0"]
    assert (script.calibration_method, script.percentile, script.calibration_size) == ("percentile", 99.99, 32)
    assert script.float_nodes == ["conv_last"]
    assert script.int16_nodes == ["stem", "block1.*", "a"]
    assert parse_model_script("precision(x, int16)\nprecision(x, int8)").int16_nodes == []
    assert not script.autocrop and script.equalize
    assert parse_model_script("autocrop()").autocrop
    assert not parse_model_script("equalization(on)\nequalization(off)").equalize
    assert parse_model_script("bias_correction(on)").bias_correction
    assert not parse_model_script("equalization(on)").bias_correction
    assert parse_model_script("quantization(method=output_mse)").calibration_method == "output_mse"
    assert parse_model_script("weight_rounding(gptq)").weight_rounding == "gptq"
    assert parse_model_script("equalization(on)").weight_rounding is None


def test_normalization_line_round_trips() -> None:
    line = parse_model_script(SCRIPT).normalizations[0].script_line()
    assert line == "normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])"
    assert parse_model_script(line).normalizations[0].mean == (123.675, 116.28, 103.53)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("normalization([1, 2], [3])", "s.ems:2:23: std has 1 values but mean has 2"),
        ("normalization([1], [0])", "s.ems:2:20: std must not contain 0"),
        ("normalization(1, [2])", "s.ems:2:15: mean must be a list of numbers, e.g. [123.675, 116.28, 103.53]"),
        ("normalization([1])", "s.ems:2:1: normalization() needs the argument 'std'"),
        ("normalization([1], [2], colour=x)", "s.ems:2:32: normalization() has no argument 'colour'; it takes: mean, std, input"),
        ("frobnicate(1)", "s.ems:2:1: unknown command 'frobnicate'; commands are: normalization, input_conversion, crop, autocrop, quantization, equalization, bias_correction, weight_rounding, precision, calibration"),
        ("input_conversion(yuv444)", "s.ems:2:18: format must be one of rgb, bgr, nv12, not 'yuv444'"),
        ("quantization(method=fast)", "s.ems:2:21: method must be one of minmax, percentile, entropy, mse, output_mse, not 'fast'"),
        ("equalization(yes)", "s.ems:2:14: equalization must be one of on, off, not 'yes'"),
        ("equalization()", "s.ems:2:1: equalization() needs the argument 'mode'"),
        ("bias_correction(maybe)", "s.ems:2:17: bias_correction must be one of on, off, not 'maybe'"),
        ("weight_rounding(adaround)", "s.ems:2:17: weight_rounding must be one of nearest, gptq, not 'adaround'"),
        ("quantization(percentile=20)", "s.ems:2:25: percentile must be a number in (50, 100], e.g. 99.99"),
        ("calibration(size=-1)", "s.ems:2:18: size must be a positive integer"),
        ("crop()", "s.ems:2:1: crop() needs inputs=[...] and/or outputs=[...]"),
        ("precision(conv1, int4)", "s.ems:2:18: precision must be one of int8, int16, float, not 'int4'"),
        ("normalization([1, 2, 3], [1, 2, 3]", "s.ems:2:35: syntax error: unexpected end of line; commands look like name = command(arg, key=value)"),
        ("x = = normalization([1], [1])", "s.ems:2:5: syntax error: unexpected '='; commands look like name = command(arg, key=value)"),
    ],
)
def test_errors_name_line_and_column(line: str, message: str) -> None:
    with pytest.raises(EmberError) as err:
        parse_model_script("# first line\n" + line + "\n", "s.ems")
    assert str(err.value) == message


def test_unreadable_file(tmp_path) -> None:
    with pytest.raises(EmberError, match=r"missing.ems: cannot read the model script \(No such file or directory\)"):
        load_model_script(tmp_path / "missing.ems")

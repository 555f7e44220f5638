"""The model script: the deployment choices a user writes in a file, one command a line.

    # comments start with '#'
    normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])
    input_conversion(bgr, input=x)            # runtime frames: rgb | bgr | nv12 (uint8 NHWC)
    crop(inputs=[x], outputs=[sigmoid_0.tmp_0])
    autocrop()
    quantization(method=percentile, percentile=99.99)
    equalization(on)                          # cross-layer equalization: on | off
    bias_correction(on)                       # empirical bias correction after quantization: on | off
    weight_rounding(gptq)                     # int8 weight rounding: nearest | gptq
    precision(conv_last, float)               # keep one node in float (on the host)
    precision([x, stem, "block1.*"], int16)   # int16 for this input and these convolutions' results (globs)
    calibration(size=32)

The grammar (`model_script.lark`) is generic, `name = command(arg, key=value, ...)`;
each command's arguments are checked here, and every error names the line and column.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lark import Lark, Token, Transformer, UnexpectedInput, v_args

from ember.support.diagnostics import EmberError

PIXEL_FORMATS = ("rgb", "bgr", "nv12")
CALIBRATION_METHODS = ("minmax", "percentile", "entropy", "mse", "output_mse")
SWITCHES = {"on": True, "off": False}
PRECISIONS = ("int8", "int16", "float")
WEIGHT_ROUNDINGS = ("nearest", "gptq")


@dataclass(frozen=True)
class Normalization:
    """`(x - mean) / std` per channel, applied to one input (None: the only input)."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input: str | None = None
    name: str = ""

    def script_line(self, index: int = 1) -> str:
        """The model-script command that states this normalization."""
        mean = ", ".join(f"{v:g}" for v in self.mean)
        std = ", ".join(f"{v:g}" for v in self.std)
        target = f", input={self.input}" if self.input else ""
        return f"{self.name or f'normalization{index}'} = normalization([{mean}], [{std}]{target})"


@dataclass(frozen=True)
class InputConversion:
    """The runtime frame format of an input: uint8 NHWC in this pixel format."""

    pixel_format: str
    input: str | None = None


@dataclass
class ModelScript:
    """Everything a model script says."""

    normalizations: list[Normalization] = field(default_factory=list)
    conversions: list[InputConversion] = field(default_factory=list)
    crop_inputs: list[str] | None = None
    crop_outputs: list[str] | None = None
    autocrop: bool = False
    calibration_method: str | None = None
    percentile: float | None = None
    calibration_size: int | None = None
    equalize: bool = False
    bias_correction: bool = False
    weight_rounding: str | None = None
    float_nodes: list[str] = field(default_factory=list)
    int16_nodes: list[str] = field(default_factory=list)
    """Convolutions (names or glob patterns) whose results are int16 (a16w8 layers)."""


_GRAMMAR = Lark.open(str(Path(__file__).with_name("model_script.lark")), parser="lalr", propagate_positions=True)


@dataclass(frozen=True)
class _Value:
    value: Any
    line: int
    column: int


@dataclass
class _Call:
    target: str | None
    name: str
    line: int
    column: int
    positional: list[_Value]
    keywords: dict[str, _Value]


class _ToCalls(Transformer):
    @v_args(meta=True)
    def statement(self, meta, children):
        call = children[-1]
        call.target = str(children[0]) if len(children) == 2 else None
        return call

    @v_args(meta=True)
    def call(self, meta, children):
        name, *args = children
        positional, keywords = [], {}
        for arg in args:
            if arg is None:
                continue
            key, value = arg
            if key is None:
                positional.append(value)
            else:
                keywords[key] = value
        return _Call(None, str(name), meta.line, meta.column, positional, keywords)

    def arg(self, children):
        if len(children) == 2:
            return str(children[0]), children[1]
        return None, children[0]

    def number(self, children):
        token: Token = children[0]
        text = str(token)
        number = float(text) if any(c in text for c in ".eE") else int(text)
        return _Value(number, token.line, token.column)

    def string(self, children):
        token: Token = children[0]
        return _Value(str(token)[1:-1], token.line, token.column)

    def word(self, children):
        token: Token = children[0]
        return _Value(str(token), token.line, token.column)

    @v_args(meta=True)
    def list(self, meta, children):
        items = [c for c in children if c is not None]
        line = items[0].line if items else getattr(meta, "line", 0)
        column = items[0].column - 1 if items else getattr(meta, "column", 0)
        return _Value([i.value for i in items], line, column)


class _Checker:
    """Turns calls into a `ModelScript`, checking each command's arguments."""

    def __init__(self, source: str):
        self.source = source
        self.script = ModelScript()
        self.commands: dict[str, Callable[[_Call], None]] = {
            "normalization": self.normalization,
            "input_conversion": self.input_conversion,
            "crop": self.crop,
            "autocrop": self.autocrop,
            "quantization": self.quantization,
            "equalization": self.equalization,
            "bias_correction": self.bias_correction,
            "weight_rounding": self.weight_rounding,
            "precision": self.precision,
            "calibration": self.calibration,
        }

    def error(self, where: _Call | _Value, message: str) -> EmberError:
        return EmberError(f"{self.source}:{where.line}:{where.column}: {message}")

    def run(self, calls: list[_Call]) -> ModelScript:
        for call in calls:
            command = self.commands.get(call.name)
            if command is None:
                raise self.error(call, f"unknown command '{call.name}'; commands are: {', '.join(self.commands)}")
            command(call)
        return self.script

    def args(self, call: _Call, positional: list[str], optional: dict[str, Any]) -> dict[str, _Value | None]:
        """Bind the call's arguments to names: `positional` are required, `optional` have defaults."""
        names = positional + list(optional)
        if len(call.positional) > len(names):
            raise self.error(call.positional[len(names)], f"{call.name}() takes at most {len(names)} arguments")
        bound: dict[str, _Value | None] = dict(zip(names, call.positional))
        for key, value in call.keywords.items():
            if key not in names:
                raise self.error(value, f"{call.name}() has no argument '{key}'; it takes: {', '.join(names)}")
            if key in bound:
                raise self.error(value, f"{call.name}() got '{key}' twice")
            bound[key] = value
        for name in positional:
            if name not in bound:
                raise self.error(call, f"{call.name}() needs the argument '{name}'")
        for name, default in optional.items():
            bound.setdefault(name, None if default is None else _Value(default, call.line, call.column))
        return bound

    def numbers(self, value: _Value, what: str) -> tuple[float, ...]:
        if not isinstance(value.value, list) or not value.value or not all(isinstance(v, int | float) for v in value.value):
            raise self.error(value, f"{what} must be a list of numbers, e.g. [123.675, 116.28, 103.53]")
        return tuple(float(v) for v in value.value)

    def names(self, value: _Value, what: str) -> list[str]:
        items = value.value if isinstance(value.value, list) else [value.value]
        if not items or not all(isinstance(v, str) for v in items):
            raise self.error(value, f"{what} must be a tensor name or a list of tensor names")
        return [str(v) for v in items]

    def choice(self, value: _Value, choices: tuple[str, ...], what: str) -> str:
        if value.value not in choices:
            raise self.error(value, f"{what} must be one of {', '.join(choices)}, not '{value.value}'")
        return str(value.value)

    def normalization(self, call: _Call) -> None:
        args = self.args(call, ["mean", "std"], {"input": None})
        mean, std = self.numbers(args["mean"], "mean"), self.numbers(args["std"], "std")
        if len(mean) != len(std):
            raise self.error(args["std"], f"std has {len(std)} values but mean has {len(mean)}")
        if any(s == 0 for s in std):
            raise self.error(args["std"], "std must not contain 0")
        target = self.names(args["input"], "input")[0] if args["input"] else None
        self.script.normalizations.append(Normalization(mean, std, target, call.target or ""))

    def input_conversion(self, call: _Call) -> None:
        args = self.args(call, ["format"], {"input": None})
        target = self.names(args["input"], "input")[0] if args["input"] else None
        self.script.conversions.append(InputConversion(self.choice(args["format"], PIXEL_FORMATS, "format"), target))

    def crop(self, call: _Call) -> None:
        args = self.args(call, [], {"inputs": None, "outputs": None})
        if args["inputs"] is None and args["outputs"] is None:
            raise self.error(call, "crop() needs inputs=[...] and/or outputs=[...]")
        if args["inputs"] is not None:
            self.script.crop_inputs = self.names(args["inputs"], "inputs")
        if args["outputs"] is not None:
            self.script.crop_outputs = self.names(args["outputs"], "outputs")

    def autocrop(self, call: _Call) -> None:
        self.args(call, [], {})
        self.script.autocrop = True

    def quantization(self, call: _Call) -> None:
        args = self.args(call, [], {"method": None, "percentile": None})
        if args["method"] is not None:
            self.script.calibration_method = self.choice(args["method"], CALIBRATION_METHODS, "method")
        if args["percentile"] is not None:
            value = args["percentile"]
            if not isinstance(value.value, int | float) or not 50 < value.value <= 100:
                raise self.error(value, "percentile must be a number in (50, 100], e.g. 99.99")
            self.script.percentile = float(value.value)

    def equalization(self, call: _Call) -> None:
        args = self.args(call, ["mode"], {})
        self.script.equalize = SWITCHES[self.choice(args["mode"], tuple(SWITCHES), "equalization")]

    def bias_correction(self, call: _Call) -> None:
        args = self.args(call, ["mode"], {})
        self.script.bias_correction = SWITCHES[self.choice(args["mode"], tuple(SWITCHES), "bias_correction")]

    def weight_rounding(self, call: _Call) -> None:
        args = self.args(call, ["mode"], {})
        self.script.weight_rounding = self.choice(args["mode"], WEIGHT_ROUNDINGS, "weight_rounding")

    def precision(self, call: _Call) -> None:
        args = self.args(call, ["node", "precision"], {})
        nodes = self.names(args["node"], "node")
        precision = self.choice(args["precision"], PRECISIONS, "precision")
        self.script.float_nodes = [n for n in self.script.float_nodes if n not in nodes]
        self.script.int16_nodes = [n for n in self.script.int16_nodes if n not in nodes]
        chosen = {"float": self.script.float_nodes, "int16": self.script.int16_nodes}.get(precision)
        if chosen is not None:
            chosen.extend(nodes)

    def calibration(self, call: _Call) -> None:
        args = self.args(call, ["size"], {})
        size = args["size"]
        if not isinstance(size.value, int) or size.value <= 0:
            raise self.error(size, "size must be a positive integer")
        self.script.calibration_size = size.value


def parse_model_script(text: str, source: str = "<script>") -> ModelScript:
    """Parse a model script; errors are one line: `source:line:column: message`."""
    try:
        tree = _GRAMMAR.parse(text if text.endswith("\n") else text + "\n")
    except UnexpectedInput as err:
        found = getattr(err, "token", None)
        what = f"unexpected '{found}'" if found not in (None, "") else "unexpected character"
        if found is not None and getattr(found, "type", "") == "_NL":
            what = "unexpected end of line"
        raise EmberError(f"{source}:{err.line}:{err.column}: syntax error: {what}; commands look like name = command(arg, key=value)") from None
    calls = _ToCalls().transform(tree).children
    return _Checker(source).run([c for c in calls if isinstance(c, _Call)])


def load_model_script(path: str | Path) -> ModelScript:
    """Read and parse a model script file."""
    file = Path(path)
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise EmberError(f"{file}: cannot read the model script ({err.strerror if isinstance(err, OSError) else 'not UTF-8 text'})") from None
    return parse_model_script(text, str(file))

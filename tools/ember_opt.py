"""`ember-opt`: run pass pipelines on ONNX models and MLIR files.

    ember-opt model.onnx --input-shape x=1,3,320,320 -p 'onnx-constant-fold,canonicalize' -t onnx -o out.onnx

Reads `.onnx` (imported into the `onnx` dialect) and `.mlir`; writes MLIR text (`-t mlir`,
the default; `--elide-weights` for reading) or ONNX (`-t onnx -o FILE`). Outputs are
written atomically: a failing run leaves no file behind.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

from xdsl.dialects.builtin import ModuleOp
from xdsl.utils.exceptions import DiagnosticException, ParseError, PassFailedException, VerifyException
from xdsl.xdsl_opt_main import xDSLOptMain

from ember.dialects.dense import elided_weights
from ember.support.atomic_output import atomic_output, write_bytes_atomic
from ember.support.diagnostics import EmberError, run_tool


def _onnx_bytes(module: ModuleOp) -> bytes:
    from ember.frontend.onnx_export import export_model

    return export_model(module).SerializeToString()


def _ebin_bytes(module: ModuleOp) -> bytes:
    from ember.lowering.npu_to_ebin import ebin_bytes

    return ebin_bytes(module)


BINARY_TARGETS: dict[str, Callable[[ModuleOp], bytes]] = {"onnx": _onnx_bytes, "ebin": _ebin_bytes}
"""Targets that write a binary file (they need `-o`); other issues add theirs here."""


class EmberOptMain(xDSLOptMain):
    """xDSL's opt driver with Ember's dialects, passes, ONNX frontend and targets."""

    version_format = "ember-opt (Ember) built on xdsl {xdsl_version}"

    def __init__(self, args: Sequence[str]):
        super().__init__(description="Ember's modular optimizer: ONNX / MLIR in, pass pipeline, MLIR / ONNX out.", args=args)

    def register_all_arguments(self, arg_parser: argparse.ArgumentParser) -> None:
        super().register_all_arguments(arg_parser)
        arg_parser.add_argument(
            "--input-shape",
            action="append",
            default=[],
            metavar="NAME=D,D,...",
            help="static shape for a graph input with dynamic dimensions (repeatable)",
        )
        arg_parser.add_argument("--elide-weights", action="store_true", help="print weights as dense_resource<__elided__>")
        arg_parser.add_argument("--debug", action="store_true", help="show Python tracebacks")

    def register_all_frontends(self) -> None:
        super().register_all_frontends()
        self.available_frontends["onnx"] = self._parse_onnx

    def register_all_targets(self) -> None:
        super().register_all_targets()
        for name in BINARY_TARGETS:
            self.available_targets[name] = lambda module, stream: None  # emitted in `run`

    def _parse_onnx(self, stream: IO[bytes]) -> ModuleOp:
        from ember.frontend.onnx_import import import_model, load_onnx, parse_input_shapes

        shapes = parse_input_shapes(self.args.input_shape)
        model = load_onnx(self.args.input_file)
        return import_model(model, shapes, source=self.args.input_file)

    def get_input_stream(self) -> tuple[IO[bytes], str]:
        path = self.args.input_file
        if path is not None and not Path(path).is_file():
            raise EmberError(f"{path}: no such file")
        if path is not None and Path(path).suffix == ".onnx":
            return io.BytesIO(), "onnx"  # the ONNX frontend reads the file and its external data itself
        if path is not None and not self.args.frontend and Path(path).suffix.lstrip(".") not in self.available_frontends:
            raise EmberError(f"{path}: unknown input format '{Path(path).suffix}'; ember-opt reads .onnx and .mlir files")
        return super().get_input_stream()

    def run(self) -> None:
        chunks, extension = self.prepare_input()
        if extension != "onnx" and self.args.input_shape:
            raise EmberError("--input-shape applies to .onnx inputs only")
        target = self.args.target
        if target in BINARY_TARGETS and not self.args.output_file:
            raise EmberError(f"-t {target} writes a binary file: give its path with -o")
        outputs: list[str] = []
        for chunk, offset in chunks:
            try:
                module = self.parse_chunk(chunk, extension, offset)
                if module is None:
                    continue
                self.apply_passes(module)
                if target in BINARY_TARGETS:
                    write_bytes_atomic(self.args.output_file, BINARY_TARGETS[target](module))
                    if target == "onnx":
                        from ember.frontend.onnx_export import write_host_parts

                        write_host_parts(module, self.args.output_file)  # the pre/post parts of a cropped module
                    return
                if self.args.elide_weights:
                    with elided_weights():
                        outputs.append(self.output_resulting_program(module))
                else:
                    outputs.append(self.output_resulting_program(module))
            except ParseError as err:
                raise EmberError(f"{self.get_input_name()}: {_first_line(err)}") from err
            except (VerifyException, DiagnosticException, PassFailedException) as err:
                raise EmberError(f"{self.get_input_name()}: {_first_line(err)}") from err
            finally:
                chunk.close()
        text = "// -----\n".join(outputs)
        if self.args.output_file:
            with atomic_output(self.args.output_file) as handle:
                handle.write(text)
        else:
            sys.stdout.write(text)

    def setup_pipeline(self) -> None:
        try:
            super().setup_pipeline()
        except Exception as err:  # xDSL raises plain exceptions for unknown passes and options
            raise EmberError(f"-p '{self.args.passes}': {_first_line(err)}") from err


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    # xDSL's parse errors quote the source around the error; its message is the last line.
    if isinstance(err, ParseError) and lines:
        return lines[-1].lstrip("^ ").strip() or lines[0]
    return lines[0] if lines else type(err).__name__


def _main(argv: Sequence[str]) -> int:
    EmberOptMain(args=argv).run()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ember-opt` console script."""
    return run_tool("ember-opt", _main, argv)


if __name__ == "__main__":
    sys.exit(main())


"""`ember-as`: assemble an Ember NPU listing (as `ember-objdump` prints it) into a binary.

    ember-as model.s -o model.ebin
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ember.support.atomic_output import write_bytes_atomic
from ember.support.diagnostics import EmberError, run_tool
from ember.target import ebin
from ember.target.listing import assemble


def _main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="ember-as", description="Assemble an Ember NPU listing into a .ebin.")
    parser.add_argument("listing", help="the assembly listing (.s)")
    parser.add_argument("-o", "--output", required=True, help="the .ebin to write")
    parser.add_argument("--debug", action="store_true", help="show Python tracebacks")
    args = parser.parse_args(argv)
    try:
        text = Path(args.listing).read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise EmberError(f"{args.listing}: cannot read ({getattr(err, 'strerror', None) or err})") from None
    model = assemble(text, args.listing)
    try:
        data = ebin.to_bytes(model)
    except ValueError as err:
        raise EmberError(f"{args.listing}: {err}") from None
    write_bytes_atomic(args.output, data)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool("ember-as", _main, argv)

"""One-line user errors and the command-line wrapper that prints them.

Every tool reports bad input as a single line on stderr and a non-zero exit code.
A Python traceback is shown only with `--debug`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


class EmberError(Exception):
    """An error caused by the user's input. Its message is one line that names the
    file, node or tensor at fault and says what to do."""


def run_tool(prog: str, main: Callable[[Sequence[str]], int | None], argv: Sequence[str] | None = None) -> int:
    """Run `main(argv)` and turn exceptions into one-line messages and exit codes.

    `EmberError` exits with 1, anything unexpected with 70 (an internal error).
    With `--debug` in `argv` the exception propagates with its traceback.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        return int(main(args) or 0)
    except EmberError as err:
        if debug:
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as err:  # noqa: BLE001 - the last line of defence against a traceback
        if debug:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        print(
            f"{prog}: internal error: {type(err).__name__}: {first} (rerun with --debug for the traceback)",
            file=sys.stderr,
        )
        return 70

"""``ulmfit-ml``: the command line over the library (``python -m ulmfit_ml`` too).

Thin by design: :mod:`.parser` parses, :mod:`.commands` calls one library function per
sub-command and prints; config files are read and checked by :mod:`ulmfit_ml.utils.config_files`.
Exit codes: 0 ok, 1 error, 2 usage or config error, 130 interrupted.

Start-up is light: importing this module (and ``ulmfit_ml``, whose names load on first use)
does not import torch or fastai; :mod:`.commands` (which does, for a few seconds) is imported
inside :func:`main`, so that Ctrl-C at any moment prints one line and exits 130 instead of a
long import traceback.
"""
from __future__ import annotations

import importlib
import sys
from typing import Any, Sequence

from ..utils.config import RunConfig
from ..utils.config_files import ConfigError, config_sections, load_config_file, parse_set, resolve_config
from .parser import build_parser, config_from_args, parse_args

__all__ = ["main", "build_parser", "config_from_args", "RunConfig", "ConfigError", "load_config_file",
           "resolve_config", "parse_set", "config_sections", "EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_INTERRUPTED"]

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# ---------------------------------------------------------------------- entry point
def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _commands() -> dict[str, Any]:
    """The sub-command functions (:data:`.commands.COMMANDS`): importing them imports torch and
    fastai, so it happens here, inside :func:`main`'s Ctrl-C handling, not at start-up."""
    return importlib.import_module(".commands", __name__).COMMANDS


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ulmfit-ml``; returns the exit code (0 ok, 1 error, 2 usage/config error, 130 interrupted)."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # Ctrl-C before the arguments were parsed, or while torch/fastai load
        if "--debug" in (sys.argv[1:] if argv is None else list(argv)):
            raise
        print("ulmfit-ml: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    prog = f"ulmfit-ml {args.command}"
    try:
        return int(_commands()[args.command_name](args))
    except ConfigError as e:
        if args.debug:
            raise
        print(f"{prog}: config error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001 - one clear line instead of a traceback (use --debug)
        if args.debug:
            raise
        kind = "" if isinstance(e, (ValueError, FileNotFoundError, FileExistsError)) else f"{type(e).__name__}: "
        print(f"{prog}: error: {kind}{_one_line(e)} (--debug shows the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())

"""The ``modelmeter`` command: a thin layer that parses, calls the library and renders.

Each command lives in its own module of this package with two functions: ``add_parser(subparsers)``
(argparse only: no heavy imports, so ``modelmeter --help`` stays fast) and ``run(args, console)``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .. import __version__

#: command modules, in the order ``--help`` lists them
COMMANDS = ["profile", "compare", "memory", "roofline", "bench", "hardware", "env"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelmeter",
        description="Every efficiency metric of a PyTorch model: parameters, MACs/FLOPs, bytes, roofline, "
        "memory, latency, MFU, energy - counted, predicted and measured.",
    )
    parser.add_argument("--version", action="version", version=f"modelmeter {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"{__name__}.{name}_cmd")
        except ModuleNotFoundError as exc:  # a command module not present in this build
            if exc.name != f"{__name__}.{name}_cmd":
                raise
            continue
        p = mod.add_parser(sub)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks for errors")
        p.set_defaults(_run=mod.run)
    return parser


def make_console(**kwargs):  # noqa: ANN201
    """A rich console that respects NO_COLOR; when output is not a terminal (a pipe, a file, CI) and
    COLUMNS is not set, tables get 140 columns instead of rich's 80 so that they do not wrap."""
    from rich.console import Console

    stream = sys.stderr if kwargs.get("stderr") else sys.stdout
    if "width" not in kwargs and not os.environ.get("COLUMNS") and not stream.isatty():
        kwargs["width"] = 140
    return Console(no_color=bool(os.environ.get("NO_COLOR")) or None, **kwargs)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from ..errors import ModelmeterError

    console = make_console()
    try:
        return int(args._run(args, console) or 0)
    except ModelmeterError as exc:
        if args.debug:
            raise
        from rich.text import Text

        err = make_console(stderr=True)
        err.print(Text.assemble(("error: ", "bold red"), str(exc)), highlight=False, soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""`llmscale` command line: parse, build typed arguments, call one library function.

Each command is a module `llmscale/cli/<name>.py` with `add_parser(subparsers)` and
`run(args) -> int`; COMMANDS lists them in the order `--help` shows them. Adding a command is
adding a module and its name here.

User mistakes (`UserError`, bad flags) exit 2 with one line on stderr; unexpected errors exit 1
("internal error"); `--debug` shows the traceback. The global options (`--debug`, `-v`,
`--log-level`) are accepted before or after the subcommand. Heavy modules (torch, datasets)
are imported inside `run`, so `--help` and `validate` stay fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from types import ModuleType

from llmscale import __version__
from llmscale.errors import UserError

# One module per command, in --help order. Each has add_parser(subparsers) and run(args).
COMMANDS: list[str] = ["validate", "train", "sweep", "status", "fit", "predict", "plan", "plot",
                       "report", "eval", "sample", "bench"]

LOG_LEVELS = ("debug", "info", "warning", "error")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--debug / -v / --log-level. On subcommands their default is SUPPRESS, so a value given
    before the subcommand is not overwritten by the subcommand's default."""
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    parser.add_argument("--debug", action="store_true", default=d(False),
                        help="show tracebacks for errors")
    parser.add_argument("-v", "--verbose", action="count", default=d(0),
                        help="more log output (-v: debug)")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default=d(None),
                        help="log level of llmscale's messages (default info)")


def command_module(name: str) -> ModuleType:
    return importlib.import_module(f"llmscale.cli.{name}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmscale",
                     description="Train LSTM language models across sizes, record loss and "
                                 "cost, and fit scaling laws.",
                     epilog="exit codes: 0 success; 1 internal error (a bug: rerun with "
                            "--debug); 2 bad input (config, flag, path); 3 a run or a sweep "
                            "did not finish (its runs are recorded; rerun to resume); "
                            "130 interrupted")
    parser.add_argument("--version", action="version", version=f"llmscale {__version__}")
    _global_options(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        command_module(name).add_parser(sub)
        _global_options(sub.choices[name], top=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    from llmscale.logs import configure_logging

    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        debug = args.debug
        configure_logging(args.log_level or ("debug" if args.verbose else "info"))
        if args.command is None:
            parser.print_help()
            return 2
        return command_module(args.command).run(args)
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"llmscale: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("llmscale: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # noqa: BLE001 - the one place that turns crashes into exit 1
        if debug:
            traceback.print_exc()
        print(f"llmscale: internal error: {type(e).__name__}: {e} (rerun with --debug for the "
              f"traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

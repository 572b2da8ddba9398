"""`llmscale` command line: parse, build the config, call one library function.

User mistakes (`UserError`, bad flags) exit 2 with one line on stderr; unexpected errors
exit 1. `--debug` shows the traceback. Heavy modules (torch, datasets) are imported inside
the handlers so `--help` and `validate` stay fast.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

from llmscale import __version__
from llmscale.errors import UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        raise UserError(f"{message} (see {self.prog} --help)")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None,
                   help="YAML config file (defaults are used when omitted)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.lr=1e-3 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="llmscale",
                     description="Train LSTM language models across sizes, record loss and "
                                 "cost, and fit scaling laws.")
    parser.add_argument("--version", action="version", version=f"llmscale {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("validate", help="print the resolved config, or what is wrong with it")
    _add_config_args(p)

    p = sub.add_parser("train", help="train one run (the config's base run)")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="run directory (default: output.dir)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")

    p = sub.add_parser("sweep", help="train every run of the config's sweep, then fit and plot")
    _add_config_args(p)
    p.add_argument("--out", default=None, help="sweep directory (default: output.dir)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    p.add_argument("--devices", default=None,
                   help="cpu, auto (one worker per GPU) or cuda:0,cuda:1,... (default: cpu, or "
                        "cuda:0 when CUDA is available)")
    p.add_argument("--runs-per-device", type=int, default=1,
                   help="runs that share one device at a time (default 1)")
    p.add_argument("--executor", choices=["local", "slurm"], default=None,
                   help="where runs execute (default: sweep.executor)")
    p.add_argument("--partition", default=None, help="SLURM partition (sweep.slurm.partition)")
    p.add_argument("--time-min", type=int, default=None, help="SLURM time limit, minutes")
    p.add_argument("--gpus-per-run", type=int, default=None, help="GPUs per run (DDP when > 1)")
    p.add_argument("--mem-gb", type=int, default=None, help="SLURM memory per task, GB")
    p.add_argument("--retry-failed", action="store_true",
                   help="run failed, diverged and oom runs again")
    p.add_argument("--force", action="store_true",
                   help="use an output directory that holds a different sweep's results")
    p.add_argument("--no-analysis", action="store_true",
                   help="skip the fit, plots and report after the sweep")

    p = sub.add_parser("status", help="done, running, failed and todo runs of a sweep")
    p.add_argument("sweep_dir")

    p = sub.add_parser("fit", help="fit scaling laws to a sweep's results")
    p.add_argument("source", help="sweep directory or results CSV")
    p.add_argument("--law", dest="laws", action="append", default=None,
                   help="law to fit (repeatable): linear, power, saturating, chinchilla, "
                        "compute (default: all that the data supports)")
    p.add_argument("--out", default=None, help="directory for fit.json (default: the sweep dir)")
    p.add_argument("--n", dest="n_column", default="params_nonembedding",
                   help="column for N (default params_nonembedding; or params_total)")
    p.add_argument("--d", dest="d_column", default="tokens", help="column for D (tokens)")
    p.add_argument("--c", dest="c_column", default="flops", help="column for C (FLOPs)")
    p.add_argument("--loss", dest="loss_column", default="val_loss", help="column for the loss")
    p.add_argument("--reduce", choices=["best", "mean"], default="best",
                   help="several runs per shape (learning rates, seeds): keep the best or the mean")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")

    p = sub.add_parser("plot", help="draw a sweep's figures under SWEEP_DIR/plots")
    p.add_argument("sweep_dir")

    p = sub.add_parser("report", help="write SWEEP_DIR/report.md and report.html")
    p.add_argument("sweep_dir")

    p = sub.add_parser("predict", help="predict loss and cost from a fit.json")
    p.add_argument("fit_json")
    p.add_argument("--law", default=None, help="law to use (default: best by held-out error)")
    p.add_argument("--params", type=float, default=None, help="N, parameters")
    p.add_argument("--tokens", type=float, default=None, help="D, training tokens")
    p.add_argument("--budget-flops", type=float, default=None, help="C, FLOPs")
    p.add_argument("--budget-gpu-hours", type=float, default=None, help="GPU-hours")

    p = sub.add_parser("bench", help="print throughput figures (data, train, sweep, fit)")
    p.add_argument("what", choices=["data", "train", "sweep", "fit"])
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a fast look")
    return parser


def _load(args) -> object:
    from llmscale.config import load_config

    return load_config(args.config, args.overrides)


def cmd_validate(args) -> int:
    from llmscale.accounting import run_accounting
    from llmscale.config import dump_yaml

    cfg = _load(args)
    acc = run_accounting(cfg)
    sys.stdout.write(dump_yaml(cfg))
    print(f"# run_id: {cfg.run_id}")
    print(f"# vocab_size: {cfg.vocab_size}  params_total: {acc.params_total:,}  "
          f"params_nonembedding: {acc.params_nonembedding:,}")
    print(f"# flops_per_token: {acc.flops_per_token:,}  tokens: {acc.tokens:,}  "
          f"flops: {acc.flops:.3e}")
    return 0


def cmd_train(args) -> int:
    from llmscale.train import train_cli

    return train_cli(_load(args), args.out, args.device)


def cmd_sweep(args) -> int:
    from llmscale.sweep import sweep_cli

    return sweep_cli(_load(args), args)


def cmd_status(args) -> int:
    from llmscale.sweep import status_cli

    return status_cli(Path(args.sweep_dir))


def cmd_fit(args) -> int:
    from llmscale.analysis import fit_cli

    return fit_cli(args)


def cmd_predict(args) -> int:
    from llmscale.analysis import predict_cli

    return predict_cli(args)


def cmd_plot(args) -> int:
    from llmscale.plots import plot_cli

    return plot_cli(Path(args.sweep_dir))


def cmd_report(args) -> int:
    from llmscale.report import report_cli

    return report_cli(Path(args.sweep_dir))


def cmd_bench(args) -> int:
    from llmscale.bench import bench_cli

    return bench_cli(args.what, quick=args.quick)


COMMANDS = {
    "validate": cmd_validate, "train": cmd_train, "sweep": cmd_sweep, "status": cmd_status,
    "fit": cmd_fit, "predict": cmd_predict, "plot": cmd_plot, "report": cmd_report,
    "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return COMMANDS[args.command](args)
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

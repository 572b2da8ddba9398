"""`llmscale eval RUN_DIR --data PATH...`: score text files with a run's model.

One row per file: tokens, UTF-8 bytes, loss (nats/token), perplexity, bits per byte (the
tokenizer-independent figure to compare runs with). `--json` prints the same rows as JSON.
Uses only the run directory (config.yaml, tokenizer.json, the checkpoint's weights).
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="score text files with a run's model (loss, ppl, bpb)")
    p.add_argument("run_dir", help="a run directory (llmscale train --out, or a sweep's runs/<name>)")
    p.add_argument("--data", nargs="+", required=True, metavar="PATH",
                   help="UTF-8 text files to score, one row each")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--device", default="cpu", help="auto | cpu | cuda | cuda:N (default cpu)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="streams scored at once (default: the run's train.batch_size)")


def run(args: argparse.Namespace) -> int:
    from llmscale.errors import UserError
    from llmscale.evaluate import load_run_model, read_text, score_file

    if args.batch_size is not None and args.batch_size < 1:
        raise UserError(f"--batch-size {args.batch_size}: must be >= 1")
    for path in args.data:  # every file readable before any scoring starts
        read_text(path)
    rm = load_run_model(args.run_dir, args.device)
    rows = [score_file(rm, path, batch_size=args.batch_size) for path in args.data]
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=2))
        return 0
    width = max(len("file"), *(len(r.path) for r in rows))
    print(f"{'file':<{width}} {'tokens':>10} {'bytes':>10} {'loss':>8} {'ppl':>10} {'bpb':>7}")
    for r in rows:
        print(f"{r.path:<{width}} {r.tokens:>10,} {r.bytes:>10,} {r.loss:>8.4f} {r.ppl:>10.3f} "
              f"{r.bpb:>7.4f}")
    return 0

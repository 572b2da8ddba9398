"""Write a prior shipped with llmscale (`llmscale plan NAME`) into llmscale/priors/.

    python scripts/make_prior.py chinchilla      # -> llmscale/priors/chinchilla.json

`chinchilla`: the real fitter (llmscale.fit.pipeline.fit_runs) on the published Chinchilla
runs shipped in llmscale/fit/data/, 200 bootstrap resamples as the law's uncertainty, its
residuals as the noise of a run (llmscale.design.chinchilla_prior). The date and the commit go
into the file's provenance.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from llmscale.atomic import atomic_write_text
    from llmscale.design import PRIORS_DIR, chinchilla_prior

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=["chinchilla"])
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--out", default=None, help="default: llmscale/priors/NAME.json")
    args = ap.parse_args()
    prior = chinchilla_prior(resamples=args.resamples)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    prior = replace(prior, provenance=f"{prior.provenance}; written by scripts/make_prior.py "
                                      f"{args.name} on {when} at commit {commit}")
    out = Path(args.out or ROOT / "llmscale" / PRIORS_DIR / f"{args.name}.json")
    atomic_write_text(out, prior.to_json())
    p = prior.params
    print(f"{out}: E {p['E']:.4g}, A {p['A']:.4g}, alpha {p['alpha']:.4g}, B {p['B']:.4g}, "
          f"beta {p['beta']:.4g}, noise {prior.noise:.4g}, {len(prior.samples)} samples",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

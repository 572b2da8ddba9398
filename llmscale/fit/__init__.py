"""Scaling-law fitting: pure functions on arrays and dataclasses (no file I/O, no matplotlib).

- `laws`: the law definitions and `predict`, the one place a law's formula is evaluated;
- `robust`: the Huber/L-BFGS-B fit from a grid of starts within explicit bounds, the bootstrap
  (optionally over processes), held-out errors;
- `select`: which runs a law sees: one IsoFLOP grouping, one frontier, the held-out set (the
  largest compute), the D a law of N describes, the best-per-shape reduction;
- `frontier`: compute-optimal allocation (closed form on the runs' own FLOPs per token, with
  bootstrap intervals) and IsoFLOP parabolas (approach 2);
- `cost`: cost laws y = k x^p (wall time, GPU-hours, tokens/s, checkpoint bytes), robust;
- `pipeline`: runs in, a typed `FitResult` out (selection redone inside every bootstrap resample);
- `guard`: each law's own warnings (`assess_law`, stored in fit.json by the pipeline), and
  predictions and the budget planner, each with its law, interval, extrapolation, warnings and
  verdict;
- `result`: the typed fit result (fit.json), `to_json` / `from_json`;
- `reference`: the published Chinchilla runs, shipped as package data.

`llmscale.analysis` does the reading and writing around them.
"""

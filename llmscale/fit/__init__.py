"""Scaling-law fitting: pure functions on arrays and dicts (no file I/O, no matplotlib).

- `laws`: the law definitions and `predict`, the one place a law's formula is evaluated;
- `robust`: the Huber/L-BFGS fit from a grid of starts, the bootstrap and the held-out check;
- `frontier`: compute-optimal allocation (closed form from Chinchilla, IsoFLOP parabolas) and
  the budget planner;
- `cost`: cost laws y = k x^p (wall time, GPU-hours, tokens/s, checkpoint bytes).

`llmscale.analysis` does the reading and writing around them.
"""

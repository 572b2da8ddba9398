"""llmscale: how language-model loss scales with model size, data and compute, and what it costs.

    from llmscale import LargeLanguageModel, load_config, train_run, run_sweep, fit_sweep

    cfg = load_config("configs/quickstart.yaml", ["model.hidden_dim=128"])
    record = train_run(cfg, "runs/one")             # one run -> RunRecord
    records = run_sweep(cfg, "runs/quickstart")     # the config's sweep -> [RunRecord]
    fit = fit_sweep("runs/quickstart")              # scaling laws -> fit.json

The names are imported on first use (PEP 562), so `import llmscale` stays light: torch,
datasets and scipy load only when a name that needs them is touched.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "LargeLanguageModel": "llmscale.model",
    "build_model": "llmscale.model",
    "load_config": "llmscale.config",
    "RunConfig": "llmscale.config",
    "train_run": "llmscale.train",
    "RunRecord": "llmscale.records",
    "read_results": "llmscale.records",
    "plan_sweep": "llmscale.sweep",
    "run_sweep": "llmscale.sweep",
    "fit_sweep": "llmscale.analysis",
    "UserError": "llmscale.errors",
}

__all__ = ["LargeLanguageModel", "RunConfig", "RunRecord", "UserError", "__version__",
           "build_model", "fit_sweep", "load_config", "plan_sweep", "read_results", "run_sweep",
           "train_run"]

if TYPE_CHECKING:
    from llmscale.analysis import fit_sweep
    from llmscale.config import RunConfig, load_config
    from llmscale.errors import UserError
    from llmscale.model import LargeLanguageModel, build_model
    from llmscale.records import RunRecord, read_results
    from llmscale.sweep import plan_sweep, run_sweep
    from llmscale.train import train_run


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'llmscale' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""Every file name in a run directory and a sweep directory, in one place.

A sweep directory DIR:

    DIR/sweep.yaml                       the resolved base config + sweep spec (the sweep's identity)
    DIR/results.csv                      one row per run (llmscale.records), upserted under a lock
    DIR/results.csv.lock                 that lock
    DIR/fit.json                         the typed fit result (llmscale.fit.result)
    DIR/report.md, DIR/report.html       the report
    DIR/plots/                           figures (PNG + SVG) and plots.json, their manifest
    DIR/runs/<name>/                     one run directory per run (below)
    DIR/runs/<name>.claim                per-run lock file: held while some process trains the run
    DIR/slurm/                           submitit's logs and pickles (executor slurm)
    DIR/slurm/jobs.json                  each run's SLURM array task ids and last seen states

A run directory RUN:

    RUN/config.yaml                      the run's resolved config
    RUN/record.json                      the run's RunRecord, written at every terminal status
    RUN/metrics.csv                      the learning curve, one row per logging step
    RUN/tokenizer.json                   the tokenizer (BPE), so the run can score and sample alone
    RUN/checkpoint/weights.safetensors   the model's tensors
    RUN/checkpoint/trainer_state.pt      optimizer, schedule, RNG, data position (weights_only)
    RUN/tb/                              TensorBoard event files (output.report_to)
    RUN/wandb/                           Weights & Biases' local run files (output.report_to)

Pure names and path helpers: nothing here touches the disk.
"""

from __future__ import annotations

from pathlib import Path

# --- sweep directory -------------------------------------------------------------------------
SWEEP_FILE = "sweep.yaml"
RESULTS_FILE = "results.csv"
FIT_FILE = "fit.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
PLOTS_DIR = "plots"
PLOTS_MANIFEST = "plots.json"
RUNS_DIR = "runs"
CLAIM_SUFFIX = ".claim"
SLURM_DIR = "slurm"
SLURM_JOBS_FILE = "jobs.json"  # inside SLURM_DIR
LOCK_SUFFIX = ".lock"

# --- run directory ---------------------------------------------------------------------------
CONFIG_FILE = "config.yaml"
RECORD_FILE = "record.json"
METRICS_FILE = "metrics.csv"
TOKENIZER_FILE = "tokenizer.json"
CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "weights.safetensors"
STATE_FILE = "trainer_state.pt"
POSITION_LOSS_FILE = "position_loss.csv"
TB_DIR = "tb"  # TensorBoard event files (output.report_to: [tensorboard])
WANDB_DIR = "wandb"  # Weights & Biases' local files (output.report_to: [wandb])


def results_path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / RESULTS_FILE


def fit_path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / FIT_FILE


def plots_dir(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / PLOTS_DIR


def run_dir(sweep_dir: str | Path, name: str) -> Path:
    return Path(sweep_dir) / RUNS_DIR / name


def claim_path(sweep_dir: str | Path, name: str) -> Path:
    return Path(sweep_dir) / RUNS_DIR / f"{name}{CLAIM_SUFFIX}"


def slurm_jobs_path(sweep_dir: str | Path) -> Path:
    return Path(sweep_dir) / SLURM_DIR / SLURM_JOBS_FILE


def lock_path(path: str | Path) -> Path:
    return Path(f"{path}{LOCK_SUFFIX}")


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / CHECKPOINT_DIR

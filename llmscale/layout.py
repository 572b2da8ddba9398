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
    RUN/checkpoint/step-<N>/             one checkpoint, after N optimizer steps; the last
                                         output.keep_checkpoints of them are kept
                 step-<N>/weights.safetensors  the model's tensors (metadata: run_id, step)
                 step-<N>/trainer_state.pt     optimizer, schedule, RNG, data position (weights_only)
                 step-<N>/manifest.json        run_id, step, each file's bytes and sha256
    RUN/checkpoint/step-<N>.tmp/         a checkpoint being written (renamed to step-<N> when whole)
    RUN/checkpoint/step-<N>.bad/         a checkpoint a resume skipped (unreadable or torn), set
                                         aside at the next save; never read, kept for inspection
    RUN/checkpoint/step-<N>.del/         an old checkpoint being deleted (renamed first)
    RUN/checkpoint/weights.safetensors   the layout before step directories (one checkpoint, the
    RUN/checkpoint/trainer_state.pt      two files side by side): still read, never written
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
MANIFEST_FILE = "manifest.json"  # inside a step directory
STEP_PREFIX = "step-"  # checkpoint/step-<N>: the checkpoint after N optimizer steps
TMP_SUFFIX = ".tmp"  # checkpoint/step-<N>.tmp: being written
BAD_SUFFIX = ".bad"  # checkpoint/step-<N>.bad: skipped by a resume, set aside
DEL_SUFFIX = ".del"  # checkpoint/step-<N>.del: being deleted
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


def step_dir(run_dir: str | Path, step: int) -> Path:
    """checkpoint/step-<N>: the (complete) checkpoint after `step` optimizer steps."""
    return checkpoint_dir(run_dir) / f"{STEP_PREFIX}{step}"


def parse_step(name: str) -> int | None:
    """N for a complete checkpoint's directory name `step-<N>`; None for any other name
    (`step-<N>.tmp`, `.bad`, `.del`, stray files)."""
    digits = name.removeprefix(STEP_PREFIX)
    if digits == name or not digits.isascii() or not digits.isdigit():
        return None
    return int(digits)

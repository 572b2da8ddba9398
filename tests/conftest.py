import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _shared_cache(tmp_path_factory):
    """One token cache for the whole session (tests that test caching make their own)."""
    cache = tmp_path_factory.mktemp("llmscale-cache")
    old = os.environ.get("LLMSCALE_CACHE")
    os.environ["LLMSCALE_CACHE"] = str(cache)
    os.environ.setdefault("MPLBACKEND", "Agg")
    yield cache
    if old is None:
        os.environ.pop("LLMSCALE_CACHE", None)
    else:
        os.environ["LLMSCALE_CACHE"] = old


def pytest_collection_modifyitems(items):
    """The SLURM tests first: they are one group on one worker (tests/test_slurm.py) and the
    longest chain of the suite (their jobs wait on the cluster); started last, the other worker
    would sit idle while they finish."""
    items.sort(key=lambda item: item.get_closest_marker("slurm") is None)


def pytest_terminal_summary(terminalreporter):
    """Never skip the SLURM tests silently: say how many were skipped and why (the README's
    `pytest -q` prints no skip reasons by itself)."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "slurm" in r.keywords]
    if skipped:
        reasons = sorted({str(r.longrepr[2]) if isinstance(r.longrepr, tuple) else str(r.longrepr)
                          for r in skipped})
        terminalreporter.write_line(f"SLURM tests: {len(skipped)} skipped: {'; '.join(reasons)}")

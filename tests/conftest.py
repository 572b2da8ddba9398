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

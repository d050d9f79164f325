"""Test-session setup shared by every test module."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def compiled_kernels():
    """Compile (first run on a machine, ~10-30 s) or load every numba kernel once, up front.

    The plant's forkserver does the same before forking children; without it, the first test
    to decode DBN or run the calculators would spend its own timeout compiling. The compiled
    code is cached on disk, so the plants the tests start load it in well under a second.
    """
    from streamctl.cli import preload

    return preload.SECONDS


@pytest.fixture
def proxy():
    """A real proxy (hub) in its own process, for publish/subscribe tests."""
    from _pubsub import ProxyProcess

    with ProxyProcess() as p:
        yield p


@pytest.fixture
def cleanup():
    """Things a test opened, closed in reverse order even when it fails."""
    items: list = []
    yield items
    for item in reversed(items):
        item.close()

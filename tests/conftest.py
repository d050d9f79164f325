"""Test-session setup and the fixtures shared by several test modules.

Helpers that are plain functions live in small modules beside this one (`_common`: free port
and the bounded wait; `_data`: the sample files; `_shmutil`, `_databento`, `_pubsub`,
`plant_helpers`); fixtures live here, so each is written once.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.fixture(scope="session", autouse=True)
def data_home(tmp_path_factory):
    """Plants started by tests keep their journals in a temporary data directory, never the
    user's (``journal.dir`` defaults to ``$XDG_DATA_HOME/streamctl/<plant>``)."""
    path = tmp_path_factory.mktemp("data-home")
    os.environ["XDG_DATA_HOME"] = str(path)
    return path


_VENDOR_KERNELS = """
from streamctl.ingest.vendor_api import resolve
from streamctl.ingest.vendors import VENDORS
for reference in dict.fromkeys(spec.warm_up for spec in VENDORS.values() if spec.warm_up):
    resolve(reference)()
"""


def pytest_sessionstart(session):
    """Compile (first run on a machine: about two minutes of CPU) or load every numba kernel
    once, before the first test: the vendors' kernels in a second process while this one does
    the rest (numba compiles on one core; on 2 cores that takes a third off a first run).

    Here and not in a fixture: a session fixture's setup counts against the first test's
    timeout, and a first compile is longer than a test may take (then every test errors on the
    cached fixture failure). The plant's forkserver does the same before forking children; the
    compiled code is cached on disk, so the plants the tests start load it in well under a second.
    """
    from streamctl.cli.forkserver import WARM_VENDORS

    vendors = subprocess.Popen([sys.executable, "-c", _VENDOR_KERNELS])
    previous = os.environ.get(WARM_VENDORS)
    os.environ[WARM_VENDORS] = ""  # none: the other process has them
    try:
        from streamctl.cli import preload
    finally:
        if previous is None:
            os.environ.pop(WARM_VENDORS)
        else:
            os.environ[WARM_VENDORS] = previous
    if vendors.wait() != 0:
        raise RuntimeError(f"compiling the vendors' numba kernels failed (exit {vendors.returncode})")
    if preload.SECONDS > 5:
        print(f"\nnumba kernels compiled in {preload.SECONDS:.0f} s (cached on disk for the next runs)")


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


@pytest.fixture
def venues():
    """Local Databento gateways started by the test, all stopped at teardown."""
    from _databento import Venues

    started = Venues()
    try:
        yield started
    finally:
        started.stop_all()


def _serve(kind: str):
    """Start a `_servers` server for the session and close it at the end."""
    import _servers

    server = getattr(_servers, kind)()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_server():
    """One PostgreSQL server for the session's sink tests (each test uses its own schema)."""
    yield from _serve("PostgresServer")


@pytest.fixture(scope="session")
def redis_server():
    """One redis-server for the session's sink tests (each test uses its own key prefix)."""
    yield from _serve("RedisServer")


@pytest.fixture(scope="session")
def kafka_broker():
    """One Kafka broker for the session's sink tests (each test uses its own topic prefix)."""
    yield from _serve("KafkaBroker")


@pytest.fixture
def ibkr_venues():
    """Local IB gateways (`IbkrVenue`) started by the test, all stopped at teardown."""
    from _ibkr import Venues

    started = Venues()
    try:
        yield started
    finally:
        started.stop_all()


@pytest.fixture
def plant(tmp_path):
    """Runs `streamctl` for the test in an isolated run directory; stops its plants at teardown."""
    from plant_helpers import PlantCli

    cli = PlantCli(tmp_path)
    try:
        yield cli
    finally:
        cli.cleanup()


# ---- CI runs every test: there, a skipped test is a failure.


def _skip_fails() -> bool:
    return bool(os.environ.get("CI"))


def _as_failure(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Turn a skip `report` into a failure that keeps the skip's reason."""
    if not (_skip_fails() and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"a skip fails under CI (CI={os.environ['CI']}), which runs every test: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _as_failure(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _as_failure(outcome.get_result())

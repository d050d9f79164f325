"""What a command pays before its data: the CLI's own imports, the forkserver's preload, its exit.

Each check runs in a fresh interpreter (this one has imported everything already)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_the_replay_command_process_loads_no_numba():
    """numba (~0.3 s) belongs in the forkserver and its children, not in the command that starts them."""
    proc = _python("import sys\n"
                   "import streamctl.cli.main, streamctl.cli.replaying, streamctl.cli.supervisor\n"
                   "print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite'))[:3])")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_the_venue_commands_are_listed_without_importing_them():
    from click.testing import CliRunner

    proc = _python("import sys\n"
                   "from click.testing import CliRunner\n"
                   "from streamctl.cli.main import cli\n"
                   "CliRunner().invoke(cli, ['--help'])\n"
                   "print(sorted(m for m in sys.modules if '.venue' in m))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    from streamctl.cli.main import cli

    result = CliRunner().invoke(cli, ["venue", "databento", "--help"])
    assert result.exit_code == 0 and "--port" in result.output
    result = CliRunner().invoke(cli, ["venue", "nope"])
    assert result.exit_code == 2 and "No such command 'nope'" in result.output


@pytest.mark.parametrize(("vendors", "loaded", "not_loaded"), [
    ("replay", "streamctl.ingest.formats.dbn.kernels", "streamctl.ingest.vendors.cme.kernels"),
    (None, "streamctl.ingest.vendors.cme.kernels", None),
])
def test_the_preload_loads_the_named_vendors_kernels(vendors, loaded, not_loaded):
    from streamctl.cli.forkserver import WARM_VENDORS

    env = {} if vendors is None else {WARM_VENDORS: vendors}
    code = "import os, sys\n" + ("" if vendors else f"os.environ.pop({WARM_VENDORS!r}, None)\n") + \
        "import streamctl.cli.preload\nprint(' '.join(sorted(m for m in sys.modules if m.endswith('.kernels'))))"
    proc = _python(code, **env)
    assert proc.returncode == 0, proc.stderr
    modules = proc.stdout.split()
    assert loaded in modules
    assert not_loaded is None or not_loaded not in modules


@pytest.mark.parametrize("live", [True, False])
def test_a_replays_preload_leaves_out_the_kernels_only_a_live_plant_runs(live):
    """A replay's children never journal, measure latency or run the recovery service; no plant
    calls the validation kernel since the feed's screen does its check (it was loaded for none)."""
    from streamctl.cli.forkserver import WARM_LIVE, WARM_VENDORS

    env = {WARM_VENDORS: "replay"} if live else {WARM_VENDORS: "replay", WARM_LIVE: "0"}
    proc = _python("import os\n"
                   f"os.environ.pop({WARM_LIVE!r}, None)\n" * live +
                   "import streamctl.cli.preload\n"
                   "from streamctl.bus import native_recv\n"
                   "from streamctl.ingest import routing, validation\n"
                   "from streamctl.process import latency\n"
                   "from streamctl.process.journal import mapped\n"
                   "for kernel in (mapped._populate, latency._count, native_recv._drain, validation._refusals,"
                   " routing._screen):\n"
                   "    print(bool(kernel.overloads))", **env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(live)] * 3 + ["False", "True"]


def test_the_preload_freezes_what_it_loaded_and_leaves_the_collector_on():
    """Collected as they came, the preload's objects cost it 257 collections; frozen, no child's
    collection walks them. A child forked from it collects its own garbage as usual."""
    from streamctl.cli.forkserver import WARM_VENDORS

    proc = _python("import gc\n"
                   "import streamctl.cli\n"
                   "before = sum(s['collections'] for s in gc.get_stats())\n"
                   "import streamctl.cli.preload\n"
                   "print(gc.isenabled(), gc.get_freeze_count() > 100_000,"
                   "      sum(s['collections'] for s in gc.get_stats()) - before)",
                   **{WARM_VENDORS: "replay"})
    assert proc.returncode == 0, proc.stderr
    enabled, frozen, collections = proc.stdout.split()
    assert (enabled, frozen) == ("True", "True")
    assert int(collections) <= 1  # the importer's own, before the preload's first line (257 with it on)


def test_the_forkserver_exit_flushes_and_skips_the_teardown():
    """Registered last, it runs first: the handlers registered before it (the interpreter's
    teardown work) never run, and what was printed still comes out."""
    proc = _python("import atexit\n"
                   "atexit.register(print, 'teardown ran')\n"
                   "print('flushed', end='')\n"
                   "import streamctl.cli.forkserver_exit\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "flushed"


def test_the_entry_point_starts_a_replays_forkserver_before_the_command_line():
    """The preload (the longest part of a replay's start-up) begins before click and the command
    line are imported, and the entry module imports neither: plant children run the console
    script again as `__mp_main__`."""
    proc = _python("import sys\n"
                   "import streamctl.cli.entry\n"
                   "print(sorted(m for m in sys.modules if m.split('.')[0] == 'click' or m == 'streamctl.cli.main'))\n"
                   "from multiprocessing import forkserver\n"
                   "class Probe:\n"
                   "    def find_spec(self, name, path=None, target=None):\n"
                   "        if name == 'click':\n"
                   "            print('forkserver running when click came:', forkserver._forkserver._forkserver_pid is not None)\n"
                   "        return None\n"
                   "sys.meta_path.insert(0, Probe())\n"
                   "streamctl.cli.entry.main(['replay', '/no/such/file.dbn'])\n")
    assert proc.returncode == 2, proc.stderr  # click refuses the missing file, after the forkserver started
    assert proc.stdout.splitlines() == ["[]", "forkserver running when click came: True"]


def test_a_child_stop_flag_wakes_its_wait_on_sigterm():
    """A hub's loop waits on its stop flag, not a sleep that SIGTERM cannot cut short: the wait
    ends when the signal comes (the 60 s wait would hold the process past the 30 s bound)."""
    proc = subprocess.run([sys.executable, "-c",
                           "import os, signal, threading\n"
                           "from streamctl.bus.lifecycle import StopFlag\n"
                           "flag = StopFlag()\n"
                           "threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGTERM)).start()\n"
                           "print(flag.wait(60), flag.wait(0))\n"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True"]


def test_a_replay_process_runs_its_exit_handlers_and_skips_the_teardown():
    """`streamctl replay` leaves through `os._exit` after every `atexit` handler (here one
    registered while the command line loads) with the command's exit code; objects still alive
    are never torn down."""
    proc = _python("import atexit, sys\n"
                   "import os\n"
                   "class Alive:\n"
                   "    def __del__(self, write=os.write):\n"
                   "        write(1, b'teardown ran\\n')\n"
                   "alive = Alive()\n"
                   "class Probe:\n"
                   "    def find_spec(self, name, path=None, target=None):\n"
                   "        if name == 'click':\n"
                   "            atexit.register(print, 'handler ran')\n"
                   "        return None\n"
                   "sys.meta_path.insert(0, Probe())\n"
                   "sys.argv = ['streamctl', 'replay', '/no/such/file.dbn']\n"
                   "import streamctl.cli.entry\n"
                   "streamctl.cli.entry.main()\n")
    assert proc.returncode == 2, proc.stderr
    assert "does not exist" in proc.stderr
    assert proc.stdout.splitlines() == ["handler ran"]


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("3", "3")])
def test_the_entry_point_keeps_openblas_to_one_thread_unless_told(given, expected):
    """No BLAS in streamctl, and OpenBLAS's thread pool spins 0.04-0.12 s of CPU per process at numpy's import."""
    env = dict(os.environ)
    env.pop("OPENBLAS_NUM_THREADS", None)
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    proc = subprocess.run([sys.executable, "-c",
                           "import os, streamctl.cli.entry\n"
                           "try:\n"
                           "    streamctl.cli.entry.main(['--version'])\n"
                           "except SystemExit:\n"
                           "    pass\n"
                           "import numpy\n"
                           "print(os.environ['OPENBLAS_NUM_THREADS'], len(os.listdir('/proc/self/task')))\n"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    value, threads = proc.stdout.split()[-2:]
    assert value == expected
    if given is None:
        assert threads == "1"  # numpy loaded, and no OpenBLAS pool beside the main thread

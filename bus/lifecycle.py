"""Child-process lifecycle shared by every plant process (feeds, workers, the hub).

Pinning, dying with the supervisor, and turning SIGTERM into a polite stop flag. Ctrl-C
reaches the whole foreground process group; children ignore SIGINT so that the supervisor
alone decides the stop order (feeds first, then workers drain, then the hub).

A child's parent is the forkserver, not the supervisor, and the forkserver outlives a
killed supervisor (every child holds its "alive" pipe open), so PR_SET_PDEATHSIG and
getppid() never notice. Each child therefore watches the supervisor itself: the creator of
the process table, through a pidfd (see docs/architecture.md, "When the supervisor dies").
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
import time

__all__ = ["pin_to_cpu", "StopFlag", "setup_child", "ChildSlot", "watch_supervisor"]

log = logging.getLogger("streamctl")

ORPHAN_GRACE = 10.0
"""Seconds an orphaned child gets for its polite stop before it SIGKILLs itself."""


def pin_to_cpu(cpu: int | None) -> None:
    """Pin this process to one core (no-op when `cpu` is None)."""
    if cpu is None:
        return
    try:
        import psutil

        psutil.Process().cpu_affinity([cpu % (os.cpu_count() or 1)])
    except (AttributeError, OSError, ValueError) as exc:  # pragma: no cover - platform dependent
        log.warning("cannot pin to cpu %s: %s", cpu, exc)


class StopFlag:
    """Set by SIGTERM, or when the parent process is gone (the supervisor was killed)."""

    def __init__(self) -> None:
        self.requested = False
        self._signalled = threading.Event()
        self._ppid = os.getppid()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        _die_with_parent()

    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = True
        self._signalled.set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, but return as soon as SIGTERM arrives (a plain sleep
        resumes after the handler, so every stop waited out the rest of a loop's period);
        whether a stop is requested."""
        self._signalled.wait(timeout)
        return bool(self)

    def __bool__(self) -> bool:
        return self.requested or os.getppid() != self._ppid


def _tighten_timer_slack() -> None:
    """Ask Linux for 1 us timer slack (default 50 us), so short idle sleeps stay short."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(29, 1000)  # PR_SET_TIMERSLACK, ns
    except OSError:  # pragma: no cover - non-Linux
        pass


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)
    except OSError:  # pragma: no cover - non-Linux
        pass


def setup_child(name: str, cpu: int | None) -> StopFlag:
    """Logging, signals and pinning for a plant child process."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(message)s", force=True)
    flag = StopFlag()
    _tighten_timer_slack()
    pin_to_cpu(cpu)
    return flag


def _wait_for_exit(pid: int, started: float) -> None:
    """Return once the process `pid` started at `started` has exited: blocked on a pidfd (opened,
    then checked, so a reused pid is never waited on), or where there is none (macOS, Linux < 5.3)
    by checking every second."""
    from streamctl.shm.segments import process_alive

    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    except (AttributeError, OSError):
        while process_alive(pid, started):
            time.sleep(1.0)
        return
    try:
        if process_alive(pid, started):
            select.select([fd], [], [])
    finally:
        os.close(fd)


def watch_supervisor(pid: int, started: float, *, grace: float = ORPHAN_GRACE) -> None:
    """SIGTERM this process as soon as the supervisor (`pid`, started at `started`) exits, and
    SIGKILL it `grace` seconds later if the polite stop has not ended it.

    The wait runs on a daemon thread that blocks on the supervisor's pidfd: no cost while it lives.
    """
    def wait_then_stop() -> None:
        _wait_for_exit(pid, started)
        log.warning("supervisor %d is gone; stopping", pid)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace)
        log.error("still running %.0f s after the supervisor died; killing myself", grace)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait_then_stop, name="supervisor-watch", daemon=True).start()


class ChildSlot:
    """This process's row in the plant's process table: claimed at start, closed at exit."""

    def __init__(self, stats: str, index: int, cpu: int | None):
        from streamctl.shm.stats import ProcessTable, State

        self._state = State
        self.table = ProcessTable.attach(stats)
        supervisor = self.table.header  # the supervisor made the table
        watch_supervisor(supervisor.creator_pid, supervisor.creator_start)
        self.slot = self.table.slot(index)
        self.slot.set("pid", os.getpid())
        self.slot.set("started_ns", time.time_ns())
        self.slot.set("cpu", -1 if cpu is None else cpu)
        self.slot.set("state", State.STARTING)
        self.slot.heartbeat()

    def ready(self) -> None:
        self.slot.set("state", self._state.READY)

    def reconnecting(self) -> None:
        """Running, and retrying a lost connection (a feed's vendor, a sink's store)."""
        self.slot.set("state", self._state.RECONNECTING)

    def stopping(self) -> None:
        self.slot.set("state", self._state.STOPPING)

    def crashed(self, exc: BaseException) -> None:
        self.slot.set("detail", f"{type(exc).__name__}: {exc}")

    def close(self, *, failed: bool) -> None:
        self.slot.set("state", self._state.FAILED if failed else self._state.EXITED)
        self.slot.heartbeat()
        self.table.close()

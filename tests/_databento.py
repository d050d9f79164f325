"""Shared pieces of the Databento tests: sample files, a recording FeedContext, venues."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import msgspec
import numpy as np
from _common import wait_until

from streamctl.ingest.vendor_api import FEED_COUNTERS
from streamctl.ingest.vendors.databento.options import Options
from streamctl.ingest.vendors.databento.session import Session
from streamctl.ingest.vendors.databento.venue import DatabentoVenue

KEY = "db-" + "A" * 27 + "ABCDE"

ESU4_TRADES = "nautilus_trader/historical_bars_catalog/futures_trades_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
ESU4_MBP1 = "nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst"
ESM4_MBO = "nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst"
ESH1_TRADES_V3 = "databento-python/GLBX.MDP3/test_data.trades.dbn.zst"
ESH1_MBP1_V3 = "databento-python/GLBX.MDP3/test_data.mbp-1.dbn.zst"
ESH1_MBO_V3 = "databento-dbn/test_data.mbo.v3.dbn"
ESH1_TRADES_V2 = "databento-dbn/test_data.trades.dbn"
NVDA_TRADES_V3 = "databento-python/XNAS.ITCH/test_data.trades.dbn.zst"
LIVE_V3 = "databento-python/LIVE/test_data.live.dbn.zst"


class Ctx:
    """A FeedContext that records what a session reports and hands out dense ids."""

    feed_name = "db"

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.counts: Counter[str] = Counter()
        self.events: list[tuple[str, str, int | None]] = []
        self.heartbeats = 0
        self.resume_at = None  # what `resume_point` answers: where the "rings" stop

    def instrument_id(self, symbol: str) -> int:
        return self.ids.setdefault(symbol, len(self.ids))

    def count(self, cause: str, n: int = 1) -> None:
        if cause not in FEED_COUNTERS:  # as the real context: a vendor may only name a feed counter
            raise ValueError(f"`cause` must be one of {sorted(FEED_COUNTERS)}; was {cause!r}")
        self.counts[cause] += n

    def event(self, kind: str, message: str, *, code: int | None = None) -> None:
        self.events.append((kind, message, code))

    def progress(self, done: float, total: float) -> None:
        pass

    def heartbeat(self) -> None:
        self.heartbeats += 1

    def resume_point(self):
        return self.resume_at

    def kinds(self) -> list[str]:
        return [k for k, _, _ in self.events]

    def reset_records(self, ids: list[int]) -> np.ndarray:
        from streamctl.shm.records import RECORD_DTYPE, Kind

        out = np.zeros(len(ids), RECORD_DTYPE)
        out["instrument_id"] = ids
        out["kind"] = Kind.RESET
        return out


class Venues:
    """Starts venues for a test and stops every one of them at teardown."""

    def __init__(self) -> None:
        self.started: list[DatabentoVenue] = []

    def start(self, files: list[str], **kwargs) -> DatabentoVenue:
        venue = DatabentoVenue(files, **kwargs)
        self.started.append(venue)
        venue.start()
        return venue

    def stop_all(self) -> None:
        for venue in self.started:
            venue.stop()


def plant_yaml(name: str, gateway_port: int, pub_port: int, *, options: str, ticks: str = "", extra: str = "") -> str:
    """A plant config with one `databento` feed `glbx` (symbol ESU4, trades) on 127.0.0.1:`gateway_port`;
    `options` are further option lines, indented six spaces. The key comes from ``DATABENTO_API_KEY``."""
    return f"""\
name: {name}
feeds:
  - name: glbx
    vendor: databento
    symbols: [ESU4]
    options:
      dataset: GLBX.MDP3
      schemas: [trades]
      key: ${{DATABENTO_API_KEY}}
      gateway: 127.0.0.1
      port: {gateway_port}
{options}
partitions: {{count: 1}}
calculators:
  bars: {{time: [60s]{f", ticks: {ticks}" if ticks else ""}}}
publish: {{endpoint: "tcp://127.0.0.1:{pub_port}"}}
{extra}"""


def options(port: int, **overrides) -> Options:
    raw = {"dataset": "GLBX.MDP3", "schemas": ["trades"], "key": KEY, "gateway": "127.0.0.1", "port": port}
    raw.update(overrides)
    return msgspec.convert(raw, Options)


def feed(*symbols: str) -> SimpleNamespace:
    return SimpleNamespace(name="db", symbols=list(symbols))


def poll_batches(session, until, *, timeout: float = 30.0, poll: float = 0.05) -> list[np.ndarray]:
    """Poll `session` until ``until(batches_so_far)`` holds; fails the test after `timeout` s."""
    batches: list[np.ndarray] = []

    def step() -> None:
        batch = session.poll(poll)
        if batch is not None and len(batch):
            batches.append(batch.copy())

    wait_until(lambda: until(batches), timeout, "the session's records", step)
    return batches


def collect(session, until, *, timeout: float = 30.0) -> np.ndarray:
    """Like `poll_batches`, with ``until`` and the result on all the records so far as one array."""
    from streamctl.shm.records import RECORD_DTYPE

    def joined(batches: list[np.ndarray]) -> np.ndarray:
        return np.concatenate(batches) if batches else np.empty(0, RECORD_DTYPE)

    return joined(poll_batches(session, lambda batches: until(joined(batches)), timeout=timeout))


def open_session(port: int, *symbols: str, ctx: Ctx | None = None, **overrides) -> tuple[Session, Ctx]:
    ctx = ctx or Ctx()
    session = Session(options(port, **overrides), feed(*symbols), ctx)
    session.open()
    return session, ctx


class HostileGateway:
    """A gateway on 127.0.0.1 that never serves data, run in a thread of the test.

    ``mode``: ``"silent"`` accepts and says nothing (not even a greeting); ``"auth_then_silent"``
    authenticates any key, takes the subscriptions and `start_session`, then sends nothing;
    ``"refuse"`` answers every authentication with `error` (any text, escape sequences too).
    `connections` counts the TCP connections accepted. Use it as a context manager.
    """

    def __init__(self, mode: str, *, error: str = "") -> None:
        import socket
        import threading

        if mode not in ("silent", "auth_then_silent", "refuse"):
            raise ValueError(f"`mode` must be silent, auth_then_silent or refuse, was {mode!r}")
        self.mode, self.error = mode, error
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hostile-gateway", daemon=True)

    def __enter__(self) -> HostileGateway:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for sock in self._open:
            sock.close()
        self._listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            self._open.append(sock)  # held open, and closed only at exit: silence, not EOF
            if self.mode != "silent":
                try:
                    self._control(sock)
                except OSError:
                    pass

    def _control(self, sock) -> None:
        from streamctl.ingest.vendors.databento import protocol as lsg

        sock.settimeout(5)
        sock.sendall(lsg.encode_line(lsg.Greeting(lsg_version=lsg.LSG_VERSION)))
        sock.sendall(lsg.encode_line(lsg.Challenge(cram="x" * 32)))
        lines = lsg.LineBuffer()

        def line() -> bytes:
            while (got := lines.next_line()) is None:
                data = sock.recv(1 << 16)
                if not data:
                    raise ConnectionError("client went away")
                lines.feed(data)
            return got

        line()  # the auth request
        if self.mode == "refuse":
            sock.sendall(lsg.encode_line(lsg.AuthResponse(success="0", error=self.error)))
            return
        sock.sendall(lsg.encode_line(lsg.AuthResponse(success="1", session_id="1")))
        while not line().startswith(b"start_session"):
            pass

"""One API client of the local venue: handshake, startApi, requests, market data, injected failures.

After the handshake (the server version is the client's highest, capped at the venue's) and
startApi, the venue sends managedAccounts, nextValidId and the farm notices 2104/2106/2158, as
TWS does. It answers contract requests from the tape's contracts (200 when none matches),
streams tick-by-tick and depth subscriptions (`streams`), answers reqCurrentTime and the sync
requests ``ib_async`` makes on connect, refuses a client id already connected (326) and a
client sending more than 50 messages in a second (100, then it disconnects).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from streamctl.ingest.vendors.ibkr import protocol as api
from streamctl.ingest.vendors.ibkr.contracts import encode_details
from streamctl.ingest.vendors.ibkr.venue.streams import Stream
from streamctl.ingest.vendors.ibkr.venue.tape import Tape

__all__ = ["Failure", "Serving", "VenueConnection", "TICK", "ACCOUNT"]

log = logging.getLogger(__name__)

TICK = 0.05
"""Longest a connection waits before it looks at its client, its streams and the stop flag."""
ACCOUNT = "DU1234567"
_RATE_LIMIT = 50
_CHUNK = 512
"""At full speed, messages a stream sends before the connection looks at its client again."""
_NOT_SUBSCRIBED_TEXT = {
    api.Code.NEEDS_SUBSCRIPTION: "Requested market data requires additional subscription for API.",
    api.Code.NOT_SUBSCRIBED: "Requested market data is not subscribed.",
}

FailureKind = Literal["disconnect", "silence", "competing", "outage-1101", "outage-1102", "malformed", "oversized"]
"""``malformed``: three bad messages (a bad time, a bad price, an unknown message id), then on as before;
``oversized``: a frame header announcing more than `api.MAX_FRAME` bytes."""


@dataclass(frozen=True)
class Failure:
    """A failure the venue injects after `after` data messages on a connection."""

    kind: FailureKind
    after: int = 0
    connections: int | None = None
    """How many connections (the first ones) suffer it; None: every one."""
    outage: float = 1.0
    """Seconds between 1100 and 1101/1102 (outages)."""


@dataclass(frozen=True)
class Serving:
    """What every connection of one venue serves, and how."""

    tape: Tape
    speed: Literal["max"] | float = "max"
    loop: bool = False
    server_version: int = api.MAX_VERSION
    failure: Failure | None = None
    not_subscribed: frozenset[str] = frozenset()
    """Symbols (local or root) whose market-data requests are refused (10089 / 354)."""
    client_ids: set[int] = field(default_factory=set)
    """Client ids connected now (guarded by `lock`)."""
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Closed(Exception):
    pass


class VenueConnection:
    """One client connection (`run` blocks until it ends)."""

    def __init__(self, serving: Serving, sock: socket.socket, number: int):
        self.serving = serving
        self.sock = sock
        self.number = number
        self.version = 0
        self.client_id: int | None = None
        self.data_sent = 0
        self.requests: list[list[str]] = []
        """Every request the client sent after startApi (fields as text), for tests."""
        self._frames = api.FrameReader()
        self._early: deque[list[bytes]] = deque()
        self._streams: dict[int, Stream] = {}
        self._aborted = threading.Event()
        self._received: deque[float] = deque()
        self._out = bytearray()
        self._held: deque[list[object]] = deque()
        """Data messages taken from the streams and not yet sent (held through an outage)."""
        self._silent = False
        self._failed = False
        self._paused_until = 0.0
        self._restore: int | None = None

    @property
    def subscriptions(self) -> int:
        """Market-data subscriptions open now."""
        return len(self._streams)

    def caught_up(self) -> bool:
        """Whether every subscription has sent all its records (tests wait on this)."""
        return not self._held and all(s.done for s in self._streams.values())

    def abort(self) -> None:
        self._aborted.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def run(self) -> None:
        try:
            self.sock.settimeout(TICK)
            if self._handshake():
                self._serve()
        except (_Closed, OSError) as exc:
            log.debug("connection %s ended: %s", self.number, exc)
        except (ValueError, IndexError) as exc:
            log.info("connection %s: malformed client message: %s", self.number, exc)
        finally:
            if self.client_id is not None:
                with self.serving.lock:
                    self.serving.client_ids.discard(self.client_id)
            self.sock.close()

    # ---- handshake
    def _handshake(self) -> bool:
        head = self._read_exact(4)
        if head != api.API_PREFIX:
            raise ValueError(f"client did not open with API\\0 but {head!r}")
        low, high = api.parse_version_range(self._next()[0])
        version = min(high, self.serving.server_version)
        if version < max(low, api.MIN_VERSION):
            log.info("connection %s: client speaks %s..%s, venue %s..%s", self.number, low, high,
                     api.MIN_VERSION, self.serving.server_version)
            return False
        self.version = version
        self._send(version, time.strftime("%Y%m%d %H:%M:%S UTC", time.gmtime()))
        self._flush()
        start = self._next()
        if int(start[0]) != api.Out.START_API:
            raise ValueError(f"expected startApi (71), got {start[0]!r}")
        client_id = int(start[2])
        with self.serving.lock:
            in_use = client_id in self.serving.client_ids
            if not in_use:
                self.serving.client_ids.add(client_id)
                self.client_id = client_id
        if in_use:
            self._error(-1, api.Code.CLIENT_ID_IN_USE, "Unable to connect as the client id is already in use. "
                                                       "Retry with a unique client id.")
            self._flush()
            return False
        self._send(api.In.MANAGED_ACCOUNTS, 1, ACCOUNT)
        self._send(api.In.NEXT_VALID_ID, 1, 1)
        self._error(-1, api.Code.FARM_OK, "Market data farm connection is OK:usfarm")
        self._error(-1, api.Code.HMDS_OK, "HMDS data farm connection is OK:ushmds")
        self._error(-1, api.Code.SECDEF_OK, "Sec-def data farm connection is OK:secdefnj")
        self._flush()
        return True

    def _read_exact(self, n: int) -> bytes:
        data = b""
        deadline = time.monotonic() + 30.0
        while len(data) < n:
            if time.monotonic() > deadline or self._aborted.is_set():
                raise _Closed("client sent nothing")
            try:
                chunk = self.sock.recv(n - len(data))
            except TimeoutError:
                continue
            if not chunk:
                raise _Closed("client closed the connection")
            data += chunk
        return data

    def _next(self) -> list[bytes]:
        """The next message of the handshake; what came with it waits in `_early` for `_serve`."""
        deadline = time.monotonic() + 30.0
        while not self._early:
            self._early.extend(self._frames.messages())
            if self._early:
                break
            if time.monotonic() > deadline:
                raise _Closed("client sent nothing")
            self._receive(TICK)
        return self._early.popleft()

    # ---- serving
    def _serve(self) -> None:
        while self._early:
            self._handle(self._early.popleft())
        while True:
            self._receive(0.0 if self._busy() else TICK)
            for fields in self._frames.messages():
                self._handle(fields)
            if not self._silent:
                self._stream()
            self._flush()

    def _busy(self) -> bool:
        return not self._silent and (bool(self._held) or any(not s.done for s in self._streams.values())
                                     and self.serving.speed == "max")

    def _receive(self, wait: float) -> None:
        if self._aborted.is_set():
            raise _Closed("venue stopping")
        readable, _, _ = select.select([self.sock], [], [], wait)
        if not readable:
            return
        data = self.sock.recv(1 << 16)
        if not data:
            raise _Closed("client closed the connection")
        self._frames.feed(data)

    def _handle(self, f: list[bytes]) -> None:
        if self._silent:
            return
        self.requests.append([x.decode("ascii", "backslashreplace") for x in f])
        now = time.monotonic()
        self._received.append(now)
        while now - self._received[0] >= 1.0:
            self._received.popleft()
        if len(self._received) > _RATE_LIMIT:
            self._error(-1, api.Code.MAX_RATE_EXCEEDED,
                        f"Max rate of messages per second has been exceeded:max={_RATE_LIMIT} rec={len(self._received)}")
            self._flush()
            raise _Closed("client exceeded the message rate")
        mid = int(f[0])
        if mid == api.Out.REQ_CONTRACT_DATA:
            self._contract_details(f)
        elif mid == api.Out.REQ_TICK_BY_TICK_DATA:
            what = {"Last": ("trades", 1), "AllLast": ("trades", 2), "BidAsk": ("quotes", 3),
                    "MidPoint": ("midpoint", 4)}.get(f[14].decode())
            if what is None:
                self._error(int(f[1]), 10190, f"Unknown tick-by-tick type {f[14]!r}")
            else:
                self._subscribe(int(f[1]), f[2:14], what[0], tick_type=what[1])
        elif mid == api.Out.REQ_MKT_DEPTH:
            self._subscribe(int(f[2]), f[3:15], "depth", rows=int(f[15]), smart=f[16] == b"1")
        elif mid == api.Out.CANCEL_TICK_BY_TICK_DATA:
            self._streams.pop(int(f[1]), None)
        elif mid == api.Out.CANCEL_MKT_DEPTH:
            self._streams.pop(int(f[2]), None)
        elif mid == api.Out.REQ_CURRENT_TIME:
            self._send(api.In.CURRENT_TIME, 1, int(time.time()))
        elif mid == api.Out.REQ_POSITIONS:
            self._send(api.In.POSITION_END, 1)
        elif mid == api.Out.REQ_OPEN_ORDERS:
            self._send(api.In.OPEN_ORDER_END, 1)
        elif mid == api.Out.REQ_COMPLETED_ORDERS:
            self._send(api.In.COMPLETED_ORDERS_END)
        elif mid == api.Out.REQ_ACCOUNT_UPDATES:
            self._send(api.In.ACCOUNT_DOWNLOAD_END, 1, ACCOUNT)
        elif mid == api.Out.REQ_ACCOUNT_UPDATES_MULTI:
            self._send(api.In.ACCOUNT_UPDATE_MULTI_END, 1, int(f[2]))
        elif mid == api.Out.REQ_EXECUTIONS:
            self._send(api.In.EXECUTION_DATA_END, 1, int(f[2]))
        else:
            log.debug("connection %s: request %s not served", self.number, mid)

    def _find(self, c: list[bytes]) -> list[int]:
        text = [x.decode("ascii", "backslashreplace") for x in c]
        return self.serving.tape.find(int(text[0] or 0), text[1], text[2], text[3], text[9], text[10])

    def _contract_details(self, f: list[bytes]) -> None:
        req_id = int(f[2])
        found = self._find(f[3:15])
        if not found:
            self._error(req_id, api.Code.NO_SECURITY_DEFINITION, "No security definition has been found for the request")
            return
        for iid in found:
            self._send(*encode_details(req_id, self.serving.tape.contracts[iid]))
        self._send(api.In.CONTRACT_DATA_END, 1, req_id)

    def _subscribe(self, req_id: int, contract: list[bytes], what: str, *, tick_type: int = 0, rows: int = 0,
                   smart: bool = False) -> None:
        found = self._find(contract)
        if len(found) != 1:
            self._error(req_id, api.Code.NO_SECURITY_DEFINITION, "No security definition has been found for the request")
            return
        tape = self.serving.tape
        c = tape.contracts[found[0]]
        if self.serving.not_subscribed & {c.local_symbol, c.symbol}:
            code = api.Code.NOT_SUBSCRIBED if what == "depth" else api.Code.NEEDS_SUBSCRIPTION
            self._error(req_id, code, f"{_NOT_SUBSCRIBED_TEXT[code]}{c.local_symbol} {c.sec_type}/{c.exchange}")
            return
        source = {"trades": "trades", "quotes": "quotes", "midpoint": "quotes", "depth": "book"}[what]
        self._streams[req_id] = Stream(req_id=req_id, what=what, positions=tape.index[(found[0], source)],
                                       start=time.monotonic(), tick_type=tick_type, rows=rows, smart=smart,
                                       exchange=c.exchange)

    def _stream(self) -> None:
        """Send the streams' due messages, in turns, until a pause, silence or the end of what is due."""
        if time.monotonic() < self._paused_until:
            return
        if self._restore is not None:
            self._end_outage()
        if not self._held:
            self._take_due()
        while self._held and not self._silent and time.monotonic() >= self._paused_until:
            self._data(self._held.popleft())

    def _take_due(self) -> None:
        """Move what each stream has due now into `_held` (a chunk per stream at full speed)."""
        now = time.monotonic()
        tape = self.serving.tape
        speed = self.serving.speed
        for stream in self._streams.values():
            if stream.done:
                if self.serving.loop and len(stream.positions):
                    self._held.extend(stream.restart(now))
                continue
            if speed == "max":
                upto = int(stream.positions[min(stream.cursor + _CHUNK, len(stream.positions)) - 1]) + 1
            else:
                base = tape.pace[stream.positions[0]]
                due = base + (now - stream.start) * float(speed)
                upto = int(tape.pace.searchsorted(due, side="right"))
            self._held.extend(stream.messages(tape.records, upto))

    def _data(self, fields: list[object]) -> None:
        self._send(*fields)
        self.data_sent += 1
        failure = self.serving.failure
        if (failure is None or self._failed or self.data_sent < failure.after
                or (failure.connections is not None and self.number > failure.connections)):
            return
        self._failed = True
        self._flush()
        if failure.kind == "disconnect":
            raise _Closed("injected disconnect")
        if failure.kind == "malformed":
            req_id = next(iter(self._streams), 0)
            self._send(api.In.TICK_BY_TICK, req_id, 2, "not-a-time", "1", "1", 0, "", "")
            self._send(api.In.TICK_BY_TICK, req_id, 2, int(time.time()), "1.2.3", "1", 0, "", "")
            self._send(777, 1, "no such message")
        elif failure.kind == "oversized":
            self._out += (api.MAX_FRAME + 1).to_bytes(4, "big") + b"\0" * 64
            self._flush()
            self._silent = True
        elif failure.kind == "silence":
            self._silent = True
        elif failure.kind == "competing":
            for req_id in list(self._streams):
                self._error(req_id, api.Code.COMPETING_SESSION, "No market data during competing live session")
            self._streams.clear()
            self._held.clear()
        else:
            self._error(-1, api.Code.CONNECTIVITY_LOST, "Connectivity between IB and Trader Workstation has been lost.")
            self._paused_until = time.monotonic() + failure.outage
            self._restore = api.Code.RESTORED_DATA_LOST if failure.kind == "outage-1101" else api.Code.RESTORED_DATA_KEPT

    def _end_outage(self) -> None:
        code, self._restore = self._restore, None
        if code == api.Code.RESTORED_DATA_LOST:
            self._streams.clear()
            self._held.clear()
            self._error(-1, code, "Connectivity between IB and Trader Workstation has been restored - data lost.")
        else:
            self._error(-1, api.Code.RESTORED_DATA_KEPT,
                        "Connectivity between IB and Trader Workstation has been restored - data maintained.")

    # ---- output
    def _error(self, req_id: int, code: int, text: str) -> None:
        if self.version >= api.VERSION_ERROR_JSON:
            self._send(api.In.ERROR, 2, req_id, code, text, "")
        else:
            self._send(api.In.ERROR, 2, req_id, code, text)

    def _send(self, *fields: object) -> None:
        self._out += api.encode(*fields)
        if len(self._out) >= 1 << 16:
            self._flush()

    def _flush(self) -> None:
        if self._out:
            self.sock.settimeout(None if not self._aborted.is_set() else TICK)
            try:
                self.sock.sendall(self._out)
            finally:
                self.sock.settimeout(TICK)
            self._out.clear()

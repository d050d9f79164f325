"""Databento live: one TCP session to a live subscription gateway (LSG), DBN in, records out.

`Session.open` connects, answers the CRAM challenge, subscribes the feed's symbols for each
configured schema and starts the session; `Session.poll` reads what the socket has (never
blocking longer than asked), feeds the shared `DbnDecoder` and returns record batches with
our instrument ids. Reconnecting is not done here: the feed loop wraps live vendors in
`streamctl.ingest.reconnect.ReconnectingSession`, which builds a fresh Session each time.

The API key is used for the CRAM hash only; it is never logged, never put in an error
message or an event, and is hidden from ``repr(options)``.
"""

from __future__ import annotations

import platform
import select
import socket
import time

import numpy as np

from streamctl.bus.wire import EventKind
from streamctl.ingest.formats.dbn.constants import ErrorCode, SystemCode
from streamctl.ingest.formats.dbn.decoder import DbnDecoder, DbnError, DecodedBatch, InstrumentMap
from streamctl.ingest.resume import AlreadyDelivered
from streamctl.ingest.vendor_api import FeedContext, Liveness, SessionError
from streamctl.ingest.vendors.databento import protocol as lsg
from streamctl.ingest.vendors.databento.options import Options
from streamctl.shm.records import RECORD_DTYPE
from streamctl.shm.stats import CounterName

__all__ = ["Session"]

_RECV_LIMIT = 4 << 20
"""Most bytes one `poll` takes from the socket before decoding (bounds latency per call)."""
_BLOCK_SLICE = 0.5
"""Longest blocking wait while connecting, between two heartbeats of the feed."""


def _client_name() -> str:
    return f"streamctl/0.1 Python/{platform.python_version()} {platform.system()}"


class Session:
    """One connection to a live gateway (see the module docstring)."""

    def __init__(self, options: Options, feed, ctx: FeedContext):
        self._opt = options
        self._ctx = ctx
        self._symbols: list[str] = list(getattr(feed, "symbols", None) or [])
        if not self._symbols:
            raise ValueError("`symbols` must list at least one symbol for a databento feed")
        self._sock: socket.socket | None = None
        self._decoder = DbnDecoder(ts_recv="now")
        self._map = InstrumentMap()
        self._produced: set[int] = set()
        self._liveness = Liveness(options.liveness)
        self._deferred: SessionError | None = None
        self._warned: set[str] = set()
        self._replayed: AlreadyDelivered | None = None
        self.session_id: str | None = None
        self.heartbeats = 0
        self.skipped: dict[str, int] = {}
        self.anomalies: dict[str, int] = {}

    # ---- FeedSession face
    def open(self) -> None:
        """Connect, authenticate, subscribe every schema, start the session."""
        opt = self._opt
        where = f"{opt.host}:{opt.port}"
        deadline = time.monotonic() + opt.connect_timeout_s
        sock = self._connect(deadline, where)
        self._sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rest = self._control_phase(sock, deadline, where)
        except SessionError:
            self.close()
            raise
        except (OSError, lsg.ControlError) as exc:
            self.close()
            raise SessionError(f"gateway {where} failed during the control phase: {exc}") from None
        sock.setblocking(False)
        self._liveness.heard()
        if rest:
            self._decoder.write(rest)
        resumed = "" if self._replayed is None else f", replaying from ts_event {self._replayed.point.ts_event}"
        self._ctx.event(EventKind.CONNECTED, f"session {self.session_id} on {where}: {', '.join(opt.schemas)}{resumed}")

    def poll(self, timeout: float) -> np.ndarray | None:
        """The records that arrived within `timeout` s (our ids), or None.

        Raises `SessionError` on EOF, on the liveness timeout, and (``retry=False``) on a
        stream that is not DBN; records decoded before such an end are returned first.
        """
        if self._deferred is not None:
            raise self._deferred
        if self._sock is None:
            raise SessionError("session is not open")
        wait = self._liveness.wait(timeout)
        eof = False
        received = 0
        try:
            readable, _, _ = select.select([self._sock], [], [], wait)
            if readable:
                received, eof = self._receive()
        except OSError as exc:
            raise SessionError(f"gateway connection failed: {exc.strerror or exc}") from None
        if received:
            self._liveness.heard()
        out: np.ndarray | None = None
        try:
            if received or eof:
                out = self._process(self._decoder.finish() if eof else self._decoder.decode())
        except DbnError as exc:
            self._defer(SessionError(f"gateway sent a stream that is not valid DBN: {exc}", retry=False))
        else:
            if eof:
                self._defer(SessionError("gateway closed the connection"))
            elif not received and self._liveness.expired():
                self._defer(
                    SessionError(f"no data or heartbeat from the gateway for {self._opt.liveness:g} s (liveness timeout)")
                )
        if out is not None and len(out):
            return out
        if self._deferred is not None:
            raise self._deferred
        return None

    def close(self) -> None:
        """Close the socket; safe to call twice."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def instruments(self) -> list[int]:
        """Our instrument ids this session has returned records for."""
        return sorted(self._produced)

    @property
    def resumed(self) -> bool:
        """Whether this session replays from where the feed's rings stop (nothing lost)."""
        return self._replayed is not None

    # ---- control phase
    def _connect(self, deadline: float, where: str) -> socket.socket:
        """Connect within `deadline`, heartbeating the feed at least every `_BLOCK_SLICE` s."""
        while True:
            self._ctx.heartbeat()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionError(f"cannot connect to gateway {where}: timed out")
            try:
                return socket.create_connection((self._opt.host, self._opt.port), timeout=min(remaining, _BLOCK_SLICE))
            except TimeoutError:
                continue  # a silent network: try again until the deadline, the feed still alive
            except OSError as exc:
                raise SessionError(f"cannot connect to gateway {where}: {exc.strerror or exc}") from None

    def _control_phase(self, sock: socket.socket, deadline: float, where: str) -> bytes:
        opt = self._opt
        lines = lsg.LineBuffer()
        lsg.decode_line(self._read_line(sock, lines, deadline), lsg.Greeting)
        challenge = lsg.decode_line(self._read_line(sock, lines, deadline), lsg.Challenge)
        request = lsg.AuthRequest(
            auth=lsg.cram_response(challenge.cram, opt.key),
            dataset=opt.dataset,
            encoding="dbn",
            ts_out="0",
            compression="none",
            heartbeat_interval_s=opt.heartbeat_interval_s,
            client=_client_name(),
        )
        sock.sendall(lsg.encode_line(request))
        reply = lsg.decode_line(self._read_line(sock, lines, deadline), lsg.AuthResponse)
        if reply.success != "1":
            raise SessionError(
                f"gateway {where} refused authentication: {reply.error or 'no reason given'}",
                retry=False,
                code=int(ErrorCode.AUTH_FAILED),
            )
        self.session_id = reply.session_id
        point = self._ctx.resume_point() if opt.resume else None
        self._replayed = AlreadyDelivered(point) if point is not None else None
        start = point.ts_event if point is not None else None
        out = bytearray()
        for sub_id, schema in enumerate(opt.schemas):
            for line in lsg.subscription_requests(schema, self._symbols, stype_in=opt.stype_in, start=start,
                                                  sub_id=sub_id):
                out += lsg.encode_line(line)
        out += lsg.encode_line(lsg.SessionStart())
        sock.sendall(out)
        return lines.rest()

    def _read_line(self, sock: socket.socket, lines: lsg.LineBuffer, deadline: float) -> bytes:
        while (line := lines.next_line()) is None:
            self._ctx.heartbeat()  # a silent gateway must not look like a hung feed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionError("gateway did not complete the control phase in time")
            sock.settimeout(min(remaining, _BLOCK_SLICE))
            try:
                data = sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                raise SessionError("gateway closed the connection during the control phase")
            lines.feed(data)
        return line

    # ---- streaming
    def _receive(self) -> tuple[int, bool]:
        """Read what the socket has (up to `_RECV_LIMIT`): (bytes read, EOF seen)."""
        assert self._sock is not None
        total = 0
        while total < _RECV_LIMIT:
            try:
                data = self._sock.recv(1 << 18)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                return total, True
            self._decoder.write(data)
            total += len(data)
        return total, False

    def _process(self, batch: DecodedBatch) -> np.ndarray:
        ctx = self._ctx
        for vendor_id, symbol in batch.mappings:
            self._map.add(vendor_id, ctx.instrument_id(symbol))
        for code, msg in batch.system:
            if code == SystemCode.HEARTBEAT or (code is None and msg == "Heartbeat"):
                self.heartbeats += 1
            else:
                ctx.event(EventKind.SYSTEM, msg, code=code)
        for code, err in batch.errors:
            ctx.count(CounterName.ERRORS)
            ctx.event(EventKind.ERROR, f"gateway error: {err}", code=code)
        for name, n in batch.skipped.items():
            self.skipped[name] = self.skipped.get(name, 0) + n
        for name, n in batch.anomalies.items():
            self.anomalies[name] = self.anomalies.get(name, 0) + n
        if batch.malformed:
            ctx.count(CounterName.MALFORMED, batch.malformed)
            self._warn_once("malformed", f"{batch.malformed} malformed DBN record(s) from the gateway skipped")
        records = batch.records
        if not len(records):
            return np.empty(0, RECORD_DTYPE)
        unknown = self._map.apply(records)
        n_unknown = int(np.count_nonzero(unknown))
        if n_unknown:
            ctx.count(CounterName.MALFORMED, n_unknown)
            self._warn_once("unmapped", f"{n_unknown} record(s) for instruments without a symbol mapping skipped")
            records = records[~unknown]
        if self._replayed is not None and not self._replayed.done:
            records = self._replayed.apply(records)
        if len(records):
            self._produced.update(np.unique(records["instrument_id"]).tolist())
        return records

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._ctx.event(EventKind.MALFORMED, message)

    def _defer(self, error: SessionError) -> None:
        """Remember why the session ended; raised once what was decoded has been returned."""
        self._deferred = error
        self.close()

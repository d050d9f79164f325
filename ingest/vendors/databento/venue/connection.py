"""One client connection of the local gateway: the control phase, then the DBN stream.

The control phase follows the official client (greeting, CRAM challenge, auth request,
``success=1|session_id=N``, subscription lines, ``start_session``). The stream is a Metadata
header, the records that answer each subscription, the subscribed records of the files paced
by ``ts_event`` (or at full speed), and heartbeats whenever the connection has been quiet.
"""

from __future__ import annotations

import logging
import secrets
import select
import socket
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

from streamctl.ingest.formats.dbn.encoder import encode_metadata, encode_system
from streamctl.ingest.vendors.databento import protocol as lsg
from streamctl.ingest.vendors.databento.venue.files import DatasetData
from streamctl.ingest.vendors.databento.venue.subscriptions import Subscriptions

__all__ = ["AUTH_TIMEOUT", "TICK", "Serving", "VenueConnection"]

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 30.0
"""Seconds a client has to send its auth line and its subscriptions (as the real gateway)."""
TICK = 0.05
"""Longest a connection (or the accept loop) waits before it looks at the stop flag again."""
_CHUNK = 1 << 16
"""Records are written in chunks of about this many bytes at full speed."""
_CHECK_EVERY = 4096
"""At full speed, records served between two looks at the client."""


@dataclass(frozen=True)
class Serving:
    """What every connection of one venue serves, and how (see `DatabentoVenue`)."""

    datasets: dict[str, DatasetData]
    speed: Literal["max"] | float
    heartbeat_interval: float
    loop: bool
    close_at_end: bool
    max_gap: float
    api_key: str | None = field(default=None, repr=False)

    def check_auth(self, challenge: str, auth: str) -> str | None:
        """None if `auth` answers `challenge` (any well-formed answer without a key), else why not."""
        return lsg.check_cram(challenge, auth, self.api_key)


_Key = tuple[str, str, int | None, int | None]
"""One subscription's lines: (schema, stype_in, id, start)."""


class _ConnectionClosed(Exception):
    pass


class VenueConnection:
    """One client connection: control phase, then the DBN stream (`run` blocks until it ends)."""

    def __init__(self, serving: Serving, sock: socket.socket, session_id: int):
        self.serving = serving
        self.sock = sock
        self.session_id = session_id
        self.records_sent = 0
        self._lines = lsg.LineBuffer()
        self._aborted = threading.Event()
        self._data: DatasetData | None = None
        self._subs: Subscriptions | None = None
        self._pending: dict[_Key, list[str]] = {}
        self._queued: list[tuple[_Key, list[str]]] = []
        self._started = False
        self._ts_out = False
        self._heartbeat = serving.heartbeat_interval
        self._last_write = time.monotonic()
        self._out = bytearray()

    def abort(self) -> None:
        """Called by `DatabentoVenue.stop`: wake the thread and drop the connection."""
        self._aborted.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def run(self) -> None:
        try:
            self.sock.settimeout(TICK)
            if self._handshake():
                self._stream()
        except (_ConnectionClosed, OSError) as exc:
            log.debug("session %s ended: %s", self.session_id, exc)
        except lsg.ControlError as exc:
            log.info("session %s: bad control line: %s", self.session_id, exc)
        finally:
            self.sock.close()

    # ---- control phase
    def _handshake(self) -> bool:
        challenge = "".join(secrets.choice(string.ascii_letters) for _ in range(32))
        self._send(lsg.encode_line(lsg.Greeting(lsg_version=lsg.LSG_VERSION)))
        self._send(lsg.encode_line(lsg.Challenge(cram=challenge)))
        self._flush()
        deadline = time.monotonic() + AUTH_TIMEOUT
        try:
            request = lsg.decode_line(self._read_line(deadline), lsg.AuthRequest)
        except lsg.ControlError as exc:
            return self._refuse(f"Invalid authentication request: {exc}")
        error = self._auth_error(challenge, request)
        if error is not None:
            return self._refuse(error)
        self._data = self.serving.datasets[request.dataset]
        self._subs = Subscriptions(self._data)
        self._ts_out = request.ts_out == "1"
        if request.heartbeat_interval_s:
            self._heartbeat = min(self._heartbeat, float(request.heartbeat_interval_s))
        self._send(lsg.encode_line(lsg.AuthResponse(success="1", session_id=str(self.session_id))))
        self._flush()
        while True:
            line = self._read_line(deadline)
            if line.startswith(b"start_session"):
                lsg.decode_line(line, lsg.SessionStart)
                return True
            self._pending_request(lsg.decode_line(line, lsg.SubscriptionRequest))

    def _auth_error(self, challenge: str, request: lsg.AuthRequest) -> str | None:
        """The gateway's refusal text for `request`, or None when it is accepted."""
        datasets = self.serving.datasets
        error = self.serving.check_auth(challenge, request.auth)
        if error is None and request.dataset not in datasets:
            error = f"Unknown dataset {request.dataset!r}; this gateway serves {', '.join(datasets)}"
        if error is None and request.encoding != "dbn":
            error = f"Unsupported encoding {request.encoding!r}; only dbn is served"
        if error is None and request.compression != "none":
            error = f"Unsupported compression {request.compression!r}; only none is served"
        if error is None and request.ts_out not in ("0", "1"):
            error = f"Invalid ts_out {request.ts_out!r}"
        return error

    def _refuse(self, error: str) -> bool:
        self._send(lsg.encode_line(lsg.AuthResponse(success="0", error=error.replace("|", "/"))))
        self._flush()
        return False

    def _read_line(self, deadline: float) -> bytes:
        while True:
            line = self._lines.next_line()
            if line is not None:
                return line
            if time.monotonic() > deadline:
                raise _ConnectionClosed("control phase timed out")
            self._receive()

    def _receive(self) -> bool:
        """Read what the client sent (waiting at most one tick); False if nothing came."""
        if self._aborted.is_set():
            raise _ConnectionClosed("venue stopping")
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return False
        if not data:
            raise _ConnectionClosed("client closed the connection")
        self._lines.feed(data)
        return True

    def _pending_request(self, request: lsg.SubscriptionRequest) -> None:
        """Collect the batches of one subscription until its ``is_last`` line."""
        # `start` counts only before `start_session`: later subscriptions get no intraday replay.
        key = (request.schema, request.stype_in, request.id, None if self._started else request.start)
        self._pending.setdefault(key, []).extend(s for s in request.symbols.split(",") if s)
        if request.is_last:
            self._queued.append((key, self._pending.pop(key)))

    # ---- streaming
    def _stream(self) -> None:
        data = self._data
        assert data is not None
        now = time.time_ns()
        self._started = True
        self._send(encode_metadata(version=data.version, dataset=data.dataset, start=now, ts_out=self._ts_out))
        self._take_lines()
        while True:
            sent = self.records_sent
            self._serve_frames(data)
            if self.serving.loop:
                if self.records_sent == sent:  # nothing subscribed matches: no busy loop
                    self._idle(time.monotonic() + 0.5)
                continue
            self._flush()
            if self.serving.close_at_end:
                self.sock.shutdown(socket.SHUT_WR)
                self._drain_until_closed()
                return
            self._idle(None)

    def _serve_frames(self, data: DatasetData) -> None:
        speed = self.serving.speed
        paced = speed != "max"
        subs = self._subs
        assert subs is not None
        start = time.monotonic()
        elapsed = 0.0  # data-time seconds served so far (gaps capped at max_gap)
        high = None
        for n, frame in enumerate(data.frames):
            if paced:
                if high is None:  # pacing starts at the first record served (a replay `start` skips ahead)
                    if not subs.wanted(frame):
                        continue
                    high = frame.ts_event
                elif frame.ts_event > high:
                    elapsed += min((frame.ts_event - high) / 1e9, self.serving.max_gap)
                    high = frame.ts_event
                due = start + elapsed / float(speed)
                if due > time.monotonic():
                    self._flush()
                    self._idle(due)
            elif len(self._out) >= _CHUNK or not n % _CHECK_EVERY:
                self._flush()
                self._poll_client()  # new subscriptions, client gone, venue stopping
            if subs.wanted(frame):
                self._record(frame.data)
                self.records_sent += 1
        self._flush()
        self._poll_client()

    def _idle(self, until: float | None) -> None:
        """Wait until `until` (forever if None), answering the client and sending heartbeats."""
        assert self._data is not None
        while True:
            now = time.monotonic()
            if until is not None and now >= until:
                return
            if now - self._last_write >= self._heartbeat:
                self._record(encode_system(version=self._data.version, ts_event=time.time_ns(), msg="Heartbeat"))
                self._flush()
                continue
            wait = min(TICK, self._last_write + self._heartbeat - now)
            self._poll_client(wait if until is None else min(wait, until - now))

    def _poll_client(self, wait: float = 0.0) -> None:
        """Take control lines sent mid-session (new subscriptions); EOF ends the session."""
        if self._aborted.is_set():
            raise _ConnectionClosed("venue stopping")
        readable, _, _ = select.select([self.sock], [], [], max(wait, 0.0))
        if readable:
            self._receive()
            self._take_lines()

    def _take_lines(self) -> None:
        """Serve the subscription lines received so far."""
        while (line := self._lines.next_line()) is not None:
            self._pending_request(lsg.decode_line(line, lsg.SubscriptionRequest))
        self._subscribe_queued()

    def _drain_until_closed(self) -> None:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            self._receive()

    def _subscribe_queued(self) -> None:
        assert self._subs is not None
        queued, self._queued = self._queued, []
        for (schema, stype_in, sub_id, start), symbols in queued:
            for record in self._subs.subscribe(schema, stype_in, sub_id, symbols, time.time_ns(), start):
                self._record(record)
        self._flush()

    # ---- writing
    def _send(self, data: bytes) -> None:
        self._out += data

    def _record(self, data: bytes) -> None:
        """Queue one DBN record, with the ``ts_out`` send time appended if the client asked."""
        if self._ts_out:
            data = bytes([data[0] + 2]) + data[1:] + time.time_ns().to_bytes(8, "little")
        self._out += data

    def _flush(self) -> None:
        if not self._out:
            return
        view = memoryview(self._out)
        sent = 0
        try:
            while sent < len(view):
                if self._aborted.is_set():
                    raise _ConnectionClosed("venue stopping")
                try:
                    sent += self.sock.send(view[sent:])
                except TimeoutError:
                    continue
        finally:
            view.release()
            del self._out[:sent]
        self._last_write = time.monotonic()

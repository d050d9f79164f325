"""A local Databento live gateway (LSG) that serves recorded DBN files over the real protocol.

``streamctl venue databento --port 13555 --data FILE...`` lets the plant, and Databento's
own ``databento.Live`` client, run against real market data without an account or network.
It speaks the control phase exactly as the official client expects (greeting, CRAM,
``success=1|session_id=N``, subscription lines, ``start_session``), then writes a live-style
DBN stream: Metadata (the served files' DBN version, schema mixed, no symbols), one
SymbolMappingMsg per instrument per subscription, a subscription-ack SystemMsg, the
matching records of the files in the files' own bytes, and heartbeat SystemMsgs when idle.

Records are paced by ``ts_event`` (the running maximum, so out-of-order stamps never wait
backwards; a gap longer than ``max_gap`` seconds of data time is shortened to it) at
``speed`` x real time, or sent at full speed with ``speed="max"``. When the data is done the
session stays open with heartbeats like a real gateway, unless ``loop`` (serve the files
again) or ``close_at_end`` (close the connection, as Databento's mock gateway does).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import secrets
import select
import signal
import socket
import string
import threading
import time
from dataclasses import dataclass, field
from typing import Literal

import click

from streamctl.ingest.formats.dbn.encoder import (
    SCHEMAS,
    UNDEF_TIMESTAMP,
    ErrorCode,
    RType,
    SystemCode,
    encode_error,
    encode_metadata,
    encode_symbol_mapping,
    encode_system,
)
from streamctl.ingest.vendors.databento import protocol as lsg

__all__ = ["DatabentoVenue", "VenueFile", "load_venue_file", "main_serve"]

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 30.0
"""Seconds a client has to send its auth line and its subscriptions (as the real gateway)."""
_TICK = 0.05
"""Longest a session thread sleeps before it looks at the stop flag again."""
_CHUNK = 1 << 16
"""Records are written in chunks of about this many bytes at full speed."""

_RTYPE_SCHEMA = {
    RType.MBP_0: "trades",
    RType.MBP_1: "mbp-1",
    RType.MBP_10: "mbp-10",
    RType.MBO: "mbo",
    RType.INSTRUMENT_DEF: "definition",
    RType.STATISTICS: "statistics",
    RType.STATUS: "status",
    RType.IMBALANCE: "imbalance",
    RType.OHLCV_1S: "ohlcv-1s",
    RType.OHLCV_1M: "ohlcv-1m",
    RType.OHLCV_1H: "ohlcv-1h",
    RType.OHLCV_1D: "ohlcv-1d",
    RType.OHLCV_EOD: "ohlcv-eod",
}
"""Schema of a record in a file whose Metadata says 'mixed' (a recorded live session)."""
_STYPES_SERVED = ("raw_symbol", "instrument_id")


@dataclass(frozen=True, slots=True)
class _Frame:
    ts_event: int
    instrument_id: int
    schema: str
    data: bytes


@dataclass
class VenueFile:
    """One served file: its records as raw DBN frames plus what resolves symbols."""

    path: str
    version: int
    dataset: str
    frames: list[_Frame]
    symbols: dict[str, set[int]] = field(default_factory=dict)
    """Raw symbol -> instrument ids (from the Metadata mappings and SymbolMappingMsgs)."""
    skipped: int = 0
    """Records of a kind the venue does not serve (gateway records, unknown rtypes)."""


def load_venue_file(path: str) -> VenueFile:
    """Read a ``.dbn``/``.dbn.zst`` file for serving; a bad file raises `ValueError` naming it."""
    from streamctl.ingest.formats.dbn import decoder as dbn

    data = dbn.read_file(path)
    meta, offset = dbn.read_metadata(data)
    if meta.ts_out:
        raise ValueError(f"`{path}`: files recorded with ts_out=1 are not served")
    symbols: dict[str, set[int]] = {}
    for instrument_id, raw_symbol in dbn.metadata_symbols(meta).items():
        symbols.setdefault(raw_symbol, set()).add(instrument_id)
    frames: list[_Frame] = []
    skipped = 0
    schema = meta.schema_name  # None for a mixed (live) file
    view = memoryview(data)
    end = len(data)
    while offset < end:
        length = data[offset] * 4
        rtype = data[offset + 1]
        known = dbn.RECORD_SIZES.get(rtype)
        if length < 16 or offset + length > end or (known is not None and known[meta.version] != length):
            raise ValueError(f"`{path}`: truncated or corrupt record at byte {offset} (length {length})")
        instrument_id = int.from_bytes(view[offset + 4 : offset + 8], "little")
        ts_event = int.from_bytes(view[offset + 8 : offset + 16], "little")
        if rtype == RType.SYMBOL_MAPPING:
            symbols.setdefault(_mapped_symbol(view[offset : offset + length], meta.version), set()).add(
                instrument_id
            )
            skipped += 1
        elif schema is not None and rtype not in (RType.SYSTEM, RType.ERROR):
            frames.append(_Frame(ts_event, instrument_id, schema, bytes(view[offset : offset + length])))
        elif rtype in _RTYPE_SCHEMA:
            frames.append(_Frame(ts_event, instrument_id, _RTYPE_SCHEMA[rtype], bytes(view[offset : offset + length])))
        else:
            skipped += 1
        offset += length
    return VenueFile(path, meta.version, meta.dataset, frames, symbols, skipped)


def _mapped_symbol(record: memoryview, version: int) -> str:
    """The resolved (``stype_out``) symbol of a SymbolMappingMsg."""
    raw = bytes(record[38:60]) if version == 1 else bytes(record[89:160])
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


class _DatasetData:
    """Everything the venue serves for one dataset: frames of all files merged by time."""

    def __init__(self, dataset: str, files: list[VenueFile]):
        versions = {f.version for f in files}
        if len(versions) > 1:
            detail = ", ".join(f"{f.path} (v{f.version})" for f in files)
            raise ValueError(f"files of dataset `{dataset}` must share one DBN version; got {detail}")
        self.dataset = dataset
        self.version = versions.pop()
        # Each file keeps its own order; files interleave by ts_event like a live feed.
        self.frames: list[_Frame] = list(heapq.merge(*(f.frames for f in files), key=lambda fr: fr.ts_event))
        self.symbols: dict[str, set[int]] = {}
        for f in files:
            for raw_symbol, ids in f.symbols.items():
                self.symbols.setdefault(raw_symbol, set()).update(ids)
        self.names: dict[int, str] = {i: s for s, ids in sorted(self.symbols.items()) for i in ids}
        self.instruments = sorted({fr.instrument_id for fr in self.frames} | set(self.names))


class DatabentoVenue:
    """A local LSG serving `files` on ``host:port`` (``port=0`` picks a free port).

    Parameters
    ----------
    files
        DBN files (``.dbn`` or ``.dbn.zst``, v1-v3); files of one dataset must share a version.
    api_key
        If set, only this key authenticates; if None, any well-formed CRAM response does.
    speed
        ``"max"`` or a factor of real time for pacing by ``ts_event``.
    heartbeat_interval
        Seconds of silence before a heartbeat (the client's shorter request wins).
    loop, close_at_end
        At the end of the data: serve the files again, or close the session
        (default: keep it open with heartbeats).
    max_gap
        Longest wait, in seconds of data time, between two records when pacing.
    """

    def __init__(
        self,
        files: list[str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        speed: Literal["max"] | float = "max",
        heartbeat_interval: float = 30.0,
        loop: bool = False,
        close_at_end: bool = False,
        max_gap: float = 5.0,
    ) -> None:
        if not files:
            raise ValueError("`files` must name at least one DBN file")
        if speed != "max" and not (isinstance(speed, int | float) and speed > 0):
            raise ValueError(f"`speed` must be 'max' or a number > 0, was {speed!r}")
        if heartbeat_interval <= 0:
            raise ValueError(f"`heartbeat_interval` must be > 0, was {heartbeat_interval}")
        if api_key is not None and len(api_key) < lsg.BUCKET_LENGTH:
            raise ValueError(f"`api_key` must be at least {lsg.BUCKET_LENGTH} characters long")
        loaded = [load_venue_file(path) for path in files]
        by_dataset: dict[str, list[VenueFile]] = {}
        for vf in loaded:
            by_dataset.setdefault(vf.dataset, []).append(vf)
        self.datasets = {name: _DatasetData(name, group) for name, group in by_dataset.items()}
        self.host = host
        self.port = port
        self.speed = speed
        self.heartbeat_interval = float(heartbeat_interval)
        self.loop = loop
        self.close_at_end = close_at_end
        self.max_gap = max_gap
        self._api_key = api_key
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sessions: dict[int, _VenueSession] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.sessions_started = 0
        self._records_done = 0

    # ---- lifecycle
    def start(self) -> None:
        """Bind and serve in a background thread; `port` holds the bound port afterwards."""
        if self._listener is not None:
            raise RuntimeError("venue already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
            listener.listen(16)
        except OSError:
            listener.close()
            raise
        listener.settimeout(_TICK)
        self._listener = listener
        self.port = listener.getsockname()[1]
        thread = threading.Thread(target=self._accept_loop, name=f"lsg-accept:{self.port}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def serve(self) -> None:
        """Start and block until `stop` is called (from a signal handler or another thread)."""
        self.start()
        while not self._stop.wait(0.2):
            pass

    def stop(self) -> None:
        """Close the listener and every session, and wait for their threads."""
        self._stop.set()
        with self._lock:
            sessions = list(self._sessions.values())
        for session in sessions:
            session.abort()
        for thread in list(self._threads):
            thread.join(timeout=5.0)
        if self._listener is not None:
            self._listener.close()

    def __enter__(self) -> DatabentoVenue:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def active_sessions(self) -> int:
        with self._lock:
            return len(self._sessions)

    def records_sent(self) -> int:
        """Data records written by every session so far (for tests waiting on progress)."""
        with self._lock:
            return sum(s.records_sent for s in self._sessions.values()) + self._records_done

    # ---- internals
    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                conn, addr = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            session_id = next(self._ids)
            session = _VenueSession(self, conn, session_id)
            thread = threading.Thread(target=self._run_session, args=(session,), name=f"lsg-{session_id}", daemon=True)
            with self._lock:
                self._sessions[session_id] = session
                self._threads.append(thread)
                self.sessions_started += 1
            thread.start()
        self._listener.close()

    def _run_session(self, session: _VenueSession) -> None:
        try:
            session.run()
        finally:
            with self._lock:
                self._sessions.pop(session.session_id, None)
                self._records_done += session.records_sent
                self._threads = [t for t in self._threads if t is not threading.current_thread()]

    def _check_auth(self, challenge: str, auth: str) -> str | None:
        return lsg.check_cram(challenge, auth, self._api_key)


class _SessionClosed(Exception):
    pass


@dataclass
class _Subscription:
    schema: str
    everything: bool = False
    ids: set[int] = field(default_factory=set)


class _VenueSession:
    """One client connection: control phase, then the DBN stream."""

    def __init__(self, venue: DatabentoVenue, sock: socket.socket, session_id: int):
        self.venue = venue
        self.sock = sock
        self.session_id = session_id
        self.records_sent = 0
        self._lines = lsg.LineBuffer()
        self._aborted = threading.Event()
        self._data: _DatasetData | None = None
        self._subs: dict[str, _Subscription] = {}
        self._pending: dict[tuple[str, str, int | None], list[str]] = {}
        self._ts_out = False
        self._heartbeat = venue.heartbeat_interval
        self._last_write = time.monotonic()
        self._out = bytearray()
        self._queued: list[tuple[tuple[str, str, int | None], list[str]]] = []

    def abort(self) -> None:
        """Called by `DatabentoVenue.stop`: wake the thread and drop the connection."""
        self._aborted.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def run(self) -> None:
        try:
            self.sock.settimeout(_TICK)
            if self._handshake():
                self._stream()
        except (_SessionClosed, OSError) as exc:
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
        error = self.venue._check_auth(challenge, request.auth)
        if error is None and request.dataset not in self.venue.datasets:
            error = f"Unknown dataset {request.dataset!r}; this gateway serves {', '.join(self.venue.datasets)}"
        if error is None and request.encoding != "dbn":
            error = f"Unsupported encoding {request.encoding!r}; only dbn is served"
        if error is None and request.compression != "none":
            error = f"Unsupported compression {request.compression!r}; only none is served"
        if error is None and request.ts_out not in ("0", "1"):
            error = f"Invalid ts_out {request.ts_out!r}"
        if error is not None:
            return self._refuse(error)
        self._data = self.venue.datasets[request.dataset]
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
                raise _SessionClosed("control phase timed out")
            self._receive()

    def _receive(self) -> bool:
        """Read what the client sent (waiting at most one tick); False if nothing came."""
        if self._aborted.is_set():
            raise _SessionClosed("venue stopping")
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            return False
        if not data:
            raise _SessionClosed("client closed the connection")
        self._lines.feed(data)
        return True

    def _pending_request(self, request: lsg.SubscriptionRequest) -> None:
        """Collect the batches of one subscription until its ``is_last`` line."""
        key = (request.schema, request.stype_in, request.id)
        self._pending.setdefault(key, []).extend(s for s in request.symbols.split(",") if s)
        if request.is_last:
            self._queued.append((key, self._pending.pop(key)))

    # ---- streaming
    def _stream(self) -> None:
        data = self._data
        assert data is not None
        now = time.time_ns()
        self._send(encode_metadata(version=data.version, dataset=data.dataset, start=now, ts_out=self._ts_out))
        self._take_lines()
        while True:
            sent = self.records_sent
            self._serve_frames(data)
            if self.venue.loop:
                if self.records_sent == sent:  # nothing subscribed matches: no busy loop
                    self._idle(time.monotonic() + 0.5)
                continue
            self._flush()
            if self.venue.close_at_end:
                self.sock.shutdown(socket.SHUT_WR)
                self._drain_until_closed()
                return
            self._idle(None)

    def _serve_frames(self, data: _DatasetData) -> None:
        speed = self.venue.speed
        paced = speed != "max"
        start = time.monotonic()
        elapsed = 0.0  # data-time seconds served so far (gaps capped at max_gap)
        high = None
        for n, frame in enumerate(data.frames):
            if paced:
                if high is None:
                    high = frame.ts_event
                elif frame.ts_event > high:
                    elapsed += min((frame.ts_event - high) / 1e9, self.venue.max_gap)
                    high = frame.ts_event
                due = start + elapsed / float(speed)
                if due > time.monotonic():
                    self._flush()
                    self._idle(due)
            elif len(self._out) >= _CHUNK or not n % 4096:
                self._flush()
                self._poll_client()  # new subscriptions, client gone, venue stopping
            if self._wanted(frame):
                self._record(frame.data)
                self.records_sent += 1
        self._flush()
        self._poll_client()

    def _wanted(self, frame: _Frame) -> bool:
        sub = self._subs.get(frame.schema)
        return sub is not None and (sub.everything or frame.instrument_id in sub.ids)

    def _idle(self, until: float | None) -> None:
        """Wait until `until` (forever if None), answering the client and sending heartbeats."""
        while True:
            now = time.monotonic()
            if until is not None and now >= until:
                return
            if now - self._last_write >= self._heartbeat:
                self._record(encode_system(version=self._version, ts_event=time.time_ns(), msg="Heartbeat"))
                self._flush()
                continue
            wait = min(_TICK, self._last_write + self._heartbeat - now)
            self._poll_client(wait if until is None else min(wait, until - now))

    def _poll_client(self, wait: float = 0.0) -> None:
        """Take control lines sent mid-session (new subscriptions); EOF ends the session."""
        if self._aborted.is_set():
            raise _SessionClosed("venue stopping")
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

    @property
    def _version(self) -> int:
        assert self._data is not None
        return self._data.version

    def _subscribe_queued(self) -> None:
        queued, self._queued = self._queued, []
        for (schema, stype_in, sub_id), symbols in queued:
            self._subscribe(schema, stype_in, sub_id, symbols)
        self._flush()

    def _subscribe(self, schema: str, stype_in: str, sub_id: int | None, symbols: list[str]) -> None:
        data = self._data
        assert data is not None
        now = time.time_ns()
        version = self._version
        if schema not in SCHEMAS:
            self._error(f"Invalid schema {schema!r}", ErrorCode.INVALID_SUBSCRIPTION)
            return
        if stype_in not in _STYPES_SERVED:
            self._error(
                f"Unsupported stype_in {stype_in!r}; this gateway resolves {', '.join(_STYPES_SERVED)}",
                ErrorCode.INVALID_SUBSCRIPTION,
            )
            return
        sub = self._subs.setdefault(schema, _Subscription(schema))
        resolved: list[tuple[str, int]] = []
        unknown: list[str] = []
        for symbol in symbols:
            if symbol == lsg.ALL_SYMBOLS:
                sub.everything = True
                resolved.extend((data.names.get(i, str(i)), i) for i in data.instruments)
            elif stype_in == "instrument_id":
                if symbol.isdigit() and int(symbol) in data.instruments:
                    resolved.append((symbol, int(symbol)))
                else:
                    unknown.append(symbol)
            elif symbol in data.symbols:
                resolved.extend((symbol, i) for i in sorted(data.symbols[symbol]))
            else:
                unknown.append(symbol)
        for symbol, instrument_id in resolved:
            sub.ids.add(instrument_id)
            out_symbol = data.names.get(instrument_id, symbol)
            self._record(
                encode_symbol_mapping(
                    version=version,
                    instrument_id=instrument_id,
                    ts_event=now,
                    stype_in=stype_in,
                    stype_in_symbol=symbol,
                    stype_out_symbol=out_symbol,
                    start_ts=UNDEF_TIMESTAMP,
                    end_ts=UNDEF_TIMESTAMP,
                )
            )
        if unknown:
            shown = ", ".join(unknown[:20]) + (f" and {len(unknown) - 20} more" if len(unknown) > 20 else "")
            self._error(f"Failed to resolve symbol(s) for {schema}: {shown}", ErrorCode.SYMBOL_RESOLUTION_FAILED)
        if resolved:
            label = 0 if sub_id is None else sub_id
            self._record(
                encode_system(
                    version=version,
                    ts_event=now,
                    msg=f"Subscription request {label} for {schema} data succeeded",
                    code=SystemCode.SUBSCRIPTION_ACK,
                )
            )

    def _error(self, text: str, code: int) -> None:
        self._record(encode_error(version=self._version, ts_event=time.time_ns(), err=text, code=code))

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
                    raise _SessionClosed("venue stopping")
                try:
                    sent += self.sock.send(view[sent:])
                except TimeoutError:
                    continue
        finally:
            view.release()
            del self._out[:sent]
        self._last_write = time.monotonic()


def main_serve(
    files: list[str],
    *,
    host: str = "127.0.0.1",
    port: int = 13000,
    api_key: str | None = None,
    speed: Literal["max"] | float = "max",
    heartbeat_interval: float = 30.0,
    loop: bool = False,
    close_at_end: bool = False,
) -> None:
    """Blocking entry of ``streamctl venue databento``: serve until SIGINT or SIGTERM."""
    venue = DatabentoVenue(
        files,
        host=host,
        port=port,
        api_key=api_key,
        speed=speed,
        heartbeat_interval=heartbeat_interval,
        loop=loop,
        close_at_end=close_at_end,
    )
    venue.start()
    summary = ", ".join(f"{d.dataset} v{d.version}: {len(d.frames)} records" for d in venue.datasets.values())
    print(f"listening on {venue.host}:{venue.port} ({summary})", flush=True)
    done = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        done.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not done.wait(0.2):
            pass
    finally:
        venue.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@click.command("databento")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=13000, show_default=True)
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="DBN file(s) to serve (repeat the option for several).")
@click.option("--speed", default="max", show_default=True, help="`max` or a multiple of real time.")
@click.option("--key", default=None, help="Accept only this API key (default: any well-formed key).")
@click.option("--heartbeat", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@click.option("--loop", is_flag=True, help="Serve the files again from the start when they end.")
@click.option("--close-at-end", is_flag=True, help="Close each session when the data ends (default: heartbeats).")
def command(host: str, port: int, data: tuple[str, ...], speed: str, key: str | None,
                    heartbeat: float, loop: bool, close_at_end: bool) -> None:
    """Serve DBN FILES over Databento's live gateway protocol (CRAM, subscriptions, DBN stream)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        pace: str | float = speed if speed == "max" else float(speed)
        if pace != "max" and not pace > 0:
            raise ValueError
    except ValueError:
        raise click.BadParameter(f"must be `max` or a number > 0; was {speed}", param_hint="--speed") from None
    main_serve(list(data), host=host, port=port, api_key=key or os.environ.get("DATABENTO_API_KEY"), speed=pace,
               heartbeat_interval=heartbeat, loop=loop, close_at_end=close_at_end)

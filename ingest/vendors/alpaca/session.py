"""Alpaca market data: one WebSocket session to a stocks (v2) or crypto (v1beta3) stream.

`Session.open` connects (asking for MessagePack or JSON frames), checks the ``connected``
greeting, authenticates and subscribes the feed's symbols to trades (with corrections and
cancels on stocks) and quotes; `Session.poll` hands out what the frames held as records.
Alpaca's error codes (`codes`) become ``error`` events; a code that retrying cannot fix fails
the session with ``retry=False`` and the vendor's reason. A silent market is not a dead
connection: unanswered WebSocket pings are (`Options.ping_timeout_s`). Reconnecting is the
feed loop's one policy (`streamctl.ingest.reconnect`), which builds a fresh Session each time.

The key and secret go in the auth message only; they never reach a log, an event or a repr.
"""

from __future__ import annotations

import threading
import time

import msgspec
import numpy as np
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.frames import CloseCode
from websockets.sync.client import ClientConnection, connect

from streamctl.bus.wire import EventKind
from streamctl.ingest.vendor_api import FeedContext, SessionError, feed_symbols
from streamctl.ingest.vendors.alpaca import messages as m
from streamctl.ingest.vendors.alpaca.codes import describe
from streamctl.ingest.vendors.alpaca.options import Options
from streamctl.ingest.vendors.alpaca.parsing import Decoded, FrameDecoder
from streamctl.shm.stats import CounterName

__all__ = ["Session"]

_BLOCK_SLICE = 0.5
"""Longest blocking wait during the handshake, between two heartbeats of the feed."""
_CLOSE_TIMEOUT_S = 2.0
"""Longest wait for the peer's answer to our close frame. A live peer answers in milliseconds;
one that stopped answering pings never will, and the library's 10 s default delayed the
session's failure, and so the reconnect, by that much after the ping timeout had fired."""
_RECORDS_PER_POLL = 16384
"""One `poll` stops taking frames once it holds this many records (bounds its latency)."""


class Session:
    """One connection to an Alpaca market-data stream (see the module docstring)."""

    def __init__(self, options: Options, feed, ctx: FeedContext):
        self._opt = options
        self._ctx = ctx
        self._symbols = feed_symbols(feed, "an alpaca")
        self._ws: ClientConnection | None = None
        self._decoder = FrameDecoder(options.encoding, self._instrument_id)
        self._encoder = msgspec.msgpack.Encoder() if options.encoding == "msgpack" else msgspec.json.Encoder()
        self._produced: set[int] = set()
        self._pending: list[np.ndarray] = []
        self._deferred: SessionError | None = None
        self._warned: set[str] = set()
        self.subscription: m.Subscription | None = None
        """The stream's last word on what this connection is subscribed to."""
        self.skipped: dict[str, int] = {}

    # ---- FeedSession face
    def open(self) -> None:
        """Connect, authenticate, subscribe; raise `SessionError` on failure."""
        opt = self._opt
        url = opt.endpoint()
        deadline = time.monotonic() + opt.connect_timeout_s
        self._ctx.heartbeat()
        self._ws = self._connect(url)
        try:
            self._expect(deadline, "connected")
            self._send(m.Request(action="auth", key=opt.key, secret=opt.secret))
            self._expect(deadline, "authenticated")
            self._send(self._subscribe_request())
            self._await_subscription(deadline)
        except SessionError:
            self.close()
            raise
        self._ctx.event(EventKind.CONNECTED, f"{url}: {', '.join(opt.channels)} of {len(self._symbols)} symbol(s)")

    def poll(self, timeout: float) -> np.ndarray | None:
        """The records that arrived within `timeout` s (our ids), or None.

        Raises `SessionError` when the connection ends (retry) or the stream reports an error
        retrying cannot fix (``retry=False``); records decoded before that are returned first.
        """
        if self._pending:
            out = np.concatenate(self._pending)
            self._pending.clear()
            return self._produce(out)
        if self._deferred is not None:
            raise self._deferred
        if self._ws is None:
            raise SessionError("session is not open")
        batches: list[np.ndarray] = []
        wait = max(timeout, 0.0)
        held = 0
        while held < _RECORDS_PER_POLL:
            try:
                frame = self._ws.recv(timeout=wait)
            except TimeoutError:
                break
            except ConnectionClosed as exc:
                self._defer(self._closed(exc))
                break
            wait = 0.0
            records = self._take(frame)
            if len(records):
                batches.append(records)
                held += len(records)
            if self._deferred is not None:
                break
        if batches:
            return self._produce(np.concatenate(batches) if len(batches) > 1 else batches[0])
        if self._deferred is not None:
            raise self._deferred
        return None

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()

    def instruments(self) -> list[int]:
        """Our instrument ids this session has returned records for."""
        return sorted(self._produced)

    # ---- handshake
    def _connect(self, url: str) -> ClientConnection:
        """The WebSocket handshake, run in a helper thread so this one heartbeats the feed meanwhile
        (a host that accepts and never answers must not look like a hung feed)."""
        opt = self._opt
        headers = {"Content-Type": "application/msgpack"} if opt.encoding == "msgpack" else {}
        result: list = []

        def handshake() -> None:
            try:
                result.append(connect(url, additional_headers=headers, open_timeout=opt.connect_timeout_s,
                                      proxy=None, ping_interval=opt.ping_interval_s, ping_timeout=opt.ping_timeout_s,
                                      close_timeout=_CLOSE_TIMEOUT_S,
                                      max_size=opt.max_frame_bytes, user_agent_header="streamctl/0.1", legacy=True))
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as exc:
                result.append(SessionError(f"cannot connect to {url}: {exc}"))

        thread = threading.Thread(target=handshake, name="alpaca-connect", daemon=True)
        thread.start()
        while thread.is_alive():  # open_timeout bounds it
            self._ctx.heartbeat()
            thread.join(_BLOCK_SLICE)
        if not result:
            raise SessionError(f"cannot connect to {url}: the handshake failed")
        if isinstance(result[0], SessionError):
            raise result[0]
        return result[0]

    def _subscribe_request(self) -> m.Request:
        symbols = self._symbols
        channels = set(self._opt.channels)
        stocks = self._opt.feed != "crypto"
        trades = symbols if "trades" in channels else None
        return m.Request(action="subscribe", trades=trades, quotes=symbols if "quotes" in channels else None,
                         corrections=trades if stocks else None, cancelErrors=trades if stocks else None)

    def _expect(self, deadline: float, what: str) -> None:
        """Wait for ``success`` with `what`; an error frame fails the session with its code."""
        while True:
            for item in self._control(deadline, f"`{what}`"):
                if isinstance(item, m.Success) and item.msg == what:
                    return
                if isinstance(item, m.Success):
                    raise SessionError(f"expected `{what}` from the stream, got `{item.msg}`")

    def _await_subscription(self, deadline: float) -> None:
        while True:
            for item in self._control(deadline, "the subscription answer"):
                if isinstance(item, m.Subscription):
                    self.subscription = item
                    return

    def _control(self, deadline: float, what: str) -> list:
        """The control messages of the next frame (data before the handshake ends is kept);
        an error message raises `SessionError` with its code."""
        assert self._ws is not None
        while True:
            self._ctx.heartbeat()  # a silent stream must not look like a hung feed
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionError(f"no {what} from the stream within {self._opt.connect_timeout_s:g} s")
            try:
                frame = self._ws.recv(timeout=min(remaining, _BLOCK_SLICE))
            except TimeoutError:
                continue
            except ConnectionClosed as exc:
                raise self._closed(exc) from None
            decoded = self._decode(frame)
            if len(decoded.records):
                self._pending.append(decoded.records)
            for item in decoded.control:
                if isinstance(item, m.Error):
                    text, retry = describe(item.code, item.msg)
                    self._ctx.count(CounterName.ERRORS)
                    raise SessionError(text, retry=retry, code=item.code)
            if decoded.control:
                return decoded.control

    def _send(self, request: m.Request) -> None:
        assert self._ws is not None
        data = self._encoder.encode(request)
        try:
            self._ws.send(data if self._opt.encoding == "msgpack" else data.decode())
        except ConnectionClosed as exc:
            raise self._closed(exc) from None

    # ---- streaming
    def _take(self, frame: bytes | str) -> np.ndarray:
        decoded = self._decode(frame)
        for item in decoded.control:
            if isinstance(item, m.Error):
                text, retry = describe(item.code, item.msg)
                self._ctx.count(CounterName.ERRORS)
                self._ctx.event(EventKind.ERROR, text, code=item.code)
                if not retry:
                    self._defer(SessionError(text, retry=False, code=item.code))
            elif isinstance(item, m.Subscription):
                self.subscription = item
                self._ctx.event(EventKind.SYSTEM, f"subscribed: trades {len(item.trades)}, quotes {len(item.quotes)}")
        return decoded.records

    def _decode(self, frame: bytes | str) -> Decoded:
        decoded = self._decoder.decode(frame, time.time_ns())
        if decoded.malformed:
            self._ctx.count(CounterName.MALFORMED, decoded.malformed)
            self._warn_once("malformed", f"malformed Alpaca message(s) skipped (counted); first: {decoded.first_problem}")
        for tag, n in decoded.skipped.items():
            self.skipped[tag] = self.skipped.get(tag, 0) + n
            self._warn_once(f"skip:{tag}", f"Alpaca `{tag}` messages are not converted (not subscribed by the plant)",
                            kind=EventKind.SKIPPED)
        return decoded

    def _produce(self, records: np.ndarray) -> np.ndarray:
        if len(records):
            self._produced.update(np.unique(records["instrument_id"]).tolist())
        return records

    def _instrument_id(self, symbol: str) -> int:
        return self._ctx.instrument_id(symbol)

    def _closed(self, exc: ConnectionClosed) -> SessionError:
        close = exc.rcvd or exc.sent
        code = close.code if close is not None else None
        if code == CloseCode.MESSAGE_TOO_BIG:
            self._ctx.count(CounterName.MALFORMED)
            self._ctx.event(EventKind.MALFORMED, f"a frame over `max_frame_bytes` ({self._opt.max_frame_bytes}) "
                            "ended the connection")
        reason = f" ({close.code} {close.reason})".rstrip() if close is not None else ""
        if close is None and exc.rcvd is None:
            reason = " (no close frame: the peer went away or stopped answering pings)"
        return SessionError(f"stream connection closed{reason}")

    def _warn_once(self, key: str, message: str, *, kind: EventKind = EventKind.MALFORMED) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self._ctx.event(kind, message)

    def _defer(self, error: SessionError) -> None:
        """Remember why the session ended; raised once what was decoded has been returned."""
        if self._deferred is None:
            self._deferred = error
        self.close()

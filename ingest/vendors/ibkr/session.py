"""Interactive Brokers: one API connection to TWS / IB Gateway, market data in, records out.

`Session.open` connects, shakes hands (``API\\0``, version range `MIN_VERSION`..`MAX_VERSION`),
sends startApi and waits for nextValidId. Everything after runs in `Session.poll`, never
blocking longer than asked: contract requests for the feed's symbols (futures roots resolve
to their front month, chosen and announced in an event), then per contract tick-by-tick
``AllLast`` trades, ``BidAsk`` quotes and L2 depth as configured. Every request goes through
one `Pacer`, so the API's 50 messages per second is never exceeded however many symbols.

The API has no heartbeat: after `probe_interval_s` of silence the session asks the time
(reqCurrentTime), and `liveness_timeout_s` without a byte ends the session. Codes the gateway
sends are events: farm status (2104/2106/2158...) and connectivity lost/kept (1100/1102) as
``system``; "no security definition" (200) and "not subscribed" (354/10089) as ``error`` for
that symbol, failing the feed (no retry) only when no symbol is left; a competing live
session (10197), connectivity restored with data lost (1101), a client id in use (326) and
the gateway's daily restart (the socket closes) end the session, and the plant's one reconnect
policy (`streamctl.ingest.reconnect`) connects again and resubscribes everything.
"""

from __future__ import annotations

import itertools
import select
import socket
import time
from collections import deque

import numpy as np

from streamctl.bus.wire import EventKind
from streamctl.ingest.vendor_api import FeedContext, Liveness, SessionError
from streamctl.ingest.vendors.ibkr import protocol as api
from streamctl.ingest.vendors.ibkr.contracts import Contract, decode_details, front_month, request_fields
from streamctl.ingest.vendors.ibkr.options import LOCAL_SYMBOL, Options
from streamctl.ingest.vendors.ibkr.pacing import Pacer
from streamctl.ingest.vendors.ibkr.parsing import MarketData, Subscription, integer
from streamctl.shm.stats import CounterName

__all__ = ["Session"]

_BLOCK_SLICE = 0.5
"""Longest blocking wait while connecting, between two heartbeats of the feed."""
_RECV_LIMIT = 4 << 20
"""Most bytes one `poll` reads before decoding (bounds the work per call)."""
_IGNORED = frozenset({
    api.In.TICK_PRICE, api.In.TICK_SIZE, api.In.TICK_GENERIC, api.In.TICK_STRING, api.In.CURRENT_TIME,
    api.In.MANAGED_ACCOUNTS, api.In.OPEN_ORDER_END, api.In.ACCOUNT_DOWNLOAD_END, api.In.EXECUTION_DATA_END,
    api.In.MARKET_DATA_TYPE, api.In.POSITION_END, api.In.ACCOUNT_UPDATE_MULTI_END, api.In.TICK_REQ_PARAMS,
    api.In.COMPLETED_ORDERS_END,
})
"""Messages the gateway may send that carry nothing for the plant."""
_SESSION_ENDING = {
    api.Code.COMPETING_SESSION: "a competing live session took the market data",
    api.Code.RESTORED_DATA_LOST: "connectivity restored but the market data subscriptions were lost",
    api.Code.CLIENT_ID_IN_USE: "the client id is in use by another API connection",
    api.Code.MAX_RATE_EXCEEDED: "the gateway says the message rate was exceeded",
}
_REFUSALS = frozenset({api.Code.NOT_SUBSCRIBED, api.Code.NEEDS_SUBSCRIPTION, api.Code.NO_SECURITY_DEFINITION})


class Session:
    """One API connection (see the module docstring)."""

    def __init__(self, options: Options, feed, ctx: FeedContext):
        self._opt = options
        self._ctx = ctx
        self._symbols: list[str] = list(getattr(feed, "symbols", None) or [])
        if not self._symbols:
            raise ValueError("`symbols` must list at least one symbol for an ibkr feed")
        self._sock: socket.socket | None = None
        self._frames = api.FrameReader()
        """Frames of the handshake and API start; afterwards bytes go to `_stream`."""
        self._stream = bytearray()
        """Received bytes not yet decoded (an incomplete frame at most, between polls)."""
        self._md = MarketData()
        self._pacer = Pacer(options.max_messages_per_s)
        self._outbox: deque[bytes] = deque()
        self._early: deque[list[bytes]] = deque()
        """Messages read during the start and not yet dispatched."""
        self._liveness = Liveness(options.liveness_timeout_s)
        self._probed = 0.0
        self._ids = itertools.count(1)
        self._resolving: dict[int, tuple[str, list[Contract]]] = {}
        self._requests: dict[int, tuple[str, str]] = {}
        """reqId -> (symbol, what) of every market-data request still live."""
        self._produced: set[int] = set()
        self._deferred: SessionError | None = None
        self._warned: set[str] = set()
        self._where = f"{options.host}:{options.port}"
        self.server_version = 0
        self.next_order_id: int | None = None
        self.resolved: dict[str, Contract] = {}
        """Feed symbol -> the contract subscribed for it."""
        self.refused: dict[str, str] = {}
        """Feed symbol (or ``symbol what``) -> why the gateway refused it."""

    # ---- FeedSession face
    def open(self) -> None:
        """Connect, shake hands, start the API and queue the contract requests."""
        deadline = time.monotonic() + self._opt.connect_timeout_s
        self._sock = self._connect(deadline)
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._start(deadline)
        except SessionError:
            self.close()
            raise
        except (OSError, ValueError, IndexError) as exc:
            self.close()
            raise SessionError(f"gateway {self._where} failed during the handshake: {exc}") from None
        self._sock.setblocking(False)
        self._liveness.heard()
        for symbol in self._symbols:
            self._request_contract(symbol)
        self._ctx.event(EventKind.CONNECTED, f"API server version {self.server_version} on {self._where}, "
                                             f"client id {self._opt.client_id}")

    def poll(self, timeout: float) -> np.ndarray | None:
        """The records that arrived within `timeout` s, or None; `SessionError` when the session ends."""
        if self._deferred is not None:
            raise self._deferred
        if self._sock is None:
            raise SessionError("session is not open")
        self._send_due()
        if self._deferred is not None:  # the gateway stopped taking our requests
            raise self._deferred
        wait = self._liveness.wait(timeout)
        if self._outbox:
            wait = min(wait, self._pacer.wait())
        received, eof = 0, False
        try:
            readable, _, _ = select.select([self._sock], [], [], wait)
            if readable:
                received, eof = self._receive()
        except OSError as exc:
            raise SessionError(f"gateway connection failed: {exc.strerror or exc}") from None
        if received:
            self._liveness.heard()
        if self._stream:
            scanned = self._md.decode(self._stream, self._dispatch)
            del self._stream[: scanned.consumed]
            if scanned.oversized:
                self._ctx.count(CounterName.MALFORMED)
                self._defer(SessionError(f"gateway sent an unframeable stream: a frame over {api.MAX_FRAME} bytes"))
        if eof and self._deferred is None:
            self._defer(SessionError("gateway closed the connection"))
        elif not received and self._deferred is None:
            self._check_alive()
        out = self._md.take(time.time_ns())
        if len(out):
            self._produced.update(np.unique(out["instrument_id"]).tolist())
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
        return sorted(self._produced)

    # ---- connecting
    def _connect(self, deadline: float) -> socket.socket:
        while True:
            self._ctx.heartbeat()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionError(f"cannot connect to gateway {self._where}: timed out")
            try:
                return socket.create_connection((self._opt.host, self._opt.port), timeout=min(remaining, _BLOCK_SLICE))
            except TimeoutError:
                continue
            except OSError as exc:
                raise SessionError(f"cannot connect to gateway {self._where}: {exc.strerror or exc}") from None

    def _start(self, deadline: float) -> None:
        """Handshake, startApi, and wait for nextValidId (the API is ready then)."""
        assert self._sock is not None
        self._sock.sendall(api.handshake())
        reply = self._next_message(deadline)
        if len(reply) != 2:
            raise SessionError(f"gateway {self._where} answered the handshake with {len(reply)} fields, not 2")
        version = int(reply[0])
        if not api.MIN_VERSION <= version <= api.MAX_VERSION:
            raise SessionError(f"gateway {self._where} speaks API version {version}; this client speaks "
                               f"{api.MIN_VERSION}..{api.MAX_VERSION}", retry=False)
        self.server_version = version
        self._sock.sendall(api.encode(api.Out.START_API, 2, self._opt.client_id, ""))
        self._pacer.sent()
        while self.next_order_id is None or self._early:
            self._dispatch(self._next_message(deadline))
            if self._deferred is not None:
                raise self._deferred
        self._stream += self._frames.rest()

    def _next_message(self, deadline: float) -> list[bytes]:
        """The next whole message during the start (blocking, heartbeating, up to `deadline`)."""
        assert self._sock is not None
        while not self._early:
            self._ctx.heartbeat()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise SessionError(f"gateway {self._where} did not complete the API start in time")
            self._sock.settimeout(min(remaining, _BLOCK_SLICE))
            try:
                data = self._sock.recv(1 << 16)
            except TimeoutError:
                continue
            if not data:
                raise SessionError(f"gateway {self._where} closed the connection during the API start")
            self._frames.feed(data)
            self._early.extend(self._frames.messages())
        return self._early.popleft()

    # ---- requests
    def _queue(self, *fields: object) -> None:
        self._outbox.append(api.encode(*fields))

    def _send_due(self) -> None:
        """Send what the pacer allows now; the rest waits for a later poll."""
        assert self._sock is not None
        out = bytearray()
        while self._outbox and self._pacer.wait() == 0.0:
            out += self._outbox.popleft()
            self._pacer.sent()
        if out:
            try:
                self._sock.sendall(out)
            except BlockingIOError:
                self._defer(SessionError("gateway does not read our requests (send buffer full)"))
            except OSError as exc:
                self._defer(SessionError(f"gateway connection failed: {exc.strerror or exc}"))

    def _request_contract(self, symbol: str) -> None:
        opt = self._opt
        req_id = next(self._ids)
        self._resolving[req_id] = (symbol, [])
        local = opt.sec_type == "FUT" and LOCAL_SYMBOL.match(symbol) is not None
        fields: list[object] = [
            api.Out.REQ_CONTRACT_DATA, 8, req_id, 0, "" if local else symbol, opt.sec_type,
            (opt.expiry or "") if not local else "", "", "", "", opt.exchange, "", opt.currency,
            symbol if local else "", "", 0, "", "",
        ]
        if self.server_version >= api.VERSION_ISSUER_ID:
            fields.append("")
        self._queue(*fields)

    def _subscribe(self, symbol: str, contract: Contract) -> None:
        opt = self._opt
        iid = self._ctx.instrument_id(contract.topic_symbol)
        self.resolved[symbol] = contract
        wanted = [w for w, on in (("trades", opt.trades), ("quotes", opt.quotes), ("depth", opt.depth_rows > 0)) if on]
        for what in wanted:
            req_id = next(self._ids)
            self._md.subs[req_id] = Subscription(iid, what)
            self._requests[req_id] = (symbol, what)
            if what == "depth":
                self._queue(api.Out.REQ_MKT_DEPTH, 5, req_id, *request_fields(contract), opt.depth_rows,
                            opt.smart_depth, "")
            else:
                tick_type = "AllLast" if what == "trades" else "BidAsk"
                self._queue(api.Out.REQ_TICK_BY_TICK_DATA, req_id, *request_fields(contract), tick_type, 0, False)

    def _check_alive(self) -> None:
        if self._liveness.expired():
            self._defer(SessionError(f"nothing from the gateway for {self._opt.liveness_timeout_s:g} s, "
                                     f"time requests unanswered (liveness timeout)"))
            return
        quiet = self._opt.liveness_timeout_s - self._liveness.wait(self._opt.liveness_timeout_s)
        now = time.monotonic()
        if quiet >= self._opt.probe_interval_s and now - self._probed >= self._opt.probe_interval_s:
            self._probed = now
            self._queue(api.Out.REQ_CURRENT_TIME, 1)

    # ---- incoming
    def _receive(self) -> tuple[int, bool]:
        assert self._sock is not None
        total = 0
        while total < _RECV_LIMIT:
            try:
                data = self._sock.recv(1 << 18)
            except (BlockingIOError, InterruptedError):
                break
            if not data:
                return total, True
            self._stream += data
            total += len(data)
        return total, False

    def _dispatch(self, f: list[bytes]) -> None:
        md = self._md
        try:
            mid = int(f[0])
            if mid == api.In.TICK_BY_TICK:
                md.tick_by_tick(f)
            elif mid == api.In.MARKET_DEPTH or mid == api.In.MARKET_DEPTH_L2:
                md.depth(f, time.time_ns())
            elif mid == api.In.ERROR:
                self._error(f)
            elif mid == api.In.CONTRACT_DATA:
                req_id, contract = decode_details(f)
                if req_id in self._resolving:
                    self._resolving[req_id][1].append(contract)
            elif mid == api.In.CONTRACT_DATA_END:
                self._resolved_contracts(int(f[2]))
            elif mid == api.In.NEXT_VALID_ID:
                self.next_order_id = int(f[2])
            elif mid not in _IGNORED:
                self._malformed("unknown", f"message type {f[0][:12]!r} is not one the API defines", f)
        except (ValueError, IndexError, UnicodeError) as exc:  # an empty frame too: it has no f[0]
            self._malformed(f"bad:{f[0][:12] if f else b''!r}", f"malformed message ({exc})", f)

    def _malformed(self, key: str, what: str, f: list[bytes]) -> None:
        self._ctx.count(CounterName.MALFORMED)
        if key not in self._warned:
            self._warned.add(key)
            shown = b",".join(f)[:120].decode("ascii", "backslashreplace")
            self._ctx.event(EventKind.MALFORMED, f"{what} skipped (first of its kind): {shown}")

    def _error(self, f: list[bytes]) -> None:
        req_id, code = integer(f[2]), integer(f[3])
        if not -(2**31) <= code < 2**31:  # TWS codes are Java ints; an event's code must encode
            raise ValueError(f"error code {code} is not a 32-bit integer")
        text = f[4].decode("ascii", "backslashreplace")
        if 2100 <= code < 2200 or code in (api.Code.CONNECTIVITY_LOST, api.Code.RESTORED_DATA_KEPT):
            self._ctx.event(EventKind.SYSTEM, f"gateway notice {code}: {text}", code=code)
        elif code in _SESSION_ENDING:
            self._ctx.count(CounterName.ERRORS)
            self._defer(SessionError(f"{_SESSION_ENDING[api.Code(code)]} ({code}: {text})", code=code))
        elif code in _REFUSALS and (req_id in self._resolving or req_id in self._requests):
            self._refuse(req_id, code, text)
        else:
            self._ctx.count(CounterName.ERRORS)
            self._ctx.event(EventKind.ERROR, f"gateway error {code} (request {req_id}): {text}", code=code)

    def _refuse(self, req_id: int, code: int, text: str) -> None:
        """The gateway refused one symbol's contract or market-data request: that part is dropped."""
        if req_id in self._resolving:
            symbol, _ = self._resolving.pop(req_id)
            what = "contract"
        else:
            symbol, what = self._requests.pop(req_id)
            self._md.subs.pop(req_id, None)
        self.refused[f"{symbol} {what}"] = text
        self._ctx.count(CounterName.ERRORS)
        self._ctx.event(EventKind.ERROR, f"{symbol}: {what} refused by the gateway ({code}: {text})", code=code)
        if not self._resolving and not self._requests:
            self._defer(SessionError(f"the gateway refused every symbol of the feed; last: {symbol} {what} "
                                     f"({code}: {text})", retry=False, code=code))

    def _resolved_contracts(self, req_id: int) -> None:
        entry = self._resolving.pop(req_id, None)
        if entry is None:
            return
        symbol, found = entry
        opt = self._opt
        local = opt.sec_type == "FUT" and LOCAL_SYMBOL.match(symbol) is not None
        if opt.sec_type == "FUT" and not local:
            chosen = front_month(found, opt.expiry)
            others = ", ".join(f"{c.local_symbol} ({c.expiry})" for c in sorted(found, key=lambda c: c.expiry)
                               if c is not chosen)
            rule = f"contract month {opt.expiry}" if opt.expiry else "front month"
        else:
            exact = [c for c in found if symbol in (c.local_symbol, c.symbol)]
            chosen = exact[0] if len(exact) == 1 else None
            others, rule = "", "exact match"
        if chosen is None:
            names = ", ".join(c.local_symbol for c in found) or "none"
            self._resolving[req_id] = entry  # refused through the one path
            self._refuse(req_id, api.Code.NO_SECURITY_DEFINITION,
                         f"no single contract for {symbol} ({rule}); the gateway offered: {names}")
            return
        twin = next((s for s, c in self.resolved.items() if c.con_id == chosen.con_id), None)
        if twin is not None:
            self._ctx.event(EventKind.SYSTEM, f"{symbol} -> {chosen.local_symbol}, already subscribed for {twin}")
            return
        self._ctx.event(EventKind.SYSTEM, f"{symbol} -> {chosen.local_symbol} (conId {chosen.con_id}, last trade "
                                          f"{chosen.expiry or 'n/a'}, {rule})" + (f"; also listed: {others}" if others else ""))
        self._subscribe(symbol, chosen)

    def _defer(self, error: SessionError) -> None:
        """Remember why the session ended; raised once what was decoded has been returned."""
        if self._deferred is None:
            self._deferred = error
        self.close()


"""One client of the local venue: Alpaca's handshake, subscriptions, then the paced stream.

The handshake is the real stream's: ``success/connected``, the auth message within
`AUTH_TIMEOUT` (``success/authenticated`` or an error and the close), then any number of
``subscribe``/``unsubscribe`` messages, each answered with the full subscription set. Frames
are MessagePack when the upgrade request says ``Content-Type: application/msgpack`` (what the
official SDKs send), JSON text otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

import msgspec
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from streamctl.ingest.vendors.alpaca import messages as m
from streamctl.ingest.vendors.alpaca.codes import CODES
from streamctl.ingest.vendors.alpaca.venue.injection import Injection
from streamctl.ingest.vendors.alpaca.venue.stream import Encoding, Item, Shape, encode_fields

if TYPE_CHECKING:
    from streamctl.ingest.vendors.alpaca.venue.server import AlpacaVenue

__all__ = ["AUTH_TIMEOUT", "VenueConnection"]

log = logging.getLogger(__name__)

AUTH_TIMEOUT = 10.0
"""Seconds a client has to authenticate (Alpaca's limit)."""
_FRAME_ITEMS = 256
"""Most messages per frame at full speed."""
_KEEPS_CONNECTION = frozenset({400, 401, 403, 405, 410})
"""Error codes that answer one message; the others end the connection."""
_CHANNELS = {
    "stocks": ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "corrections",
               "cancelErrors"),
    "crypto": ("trades", "quotes", "bars", "updatedBars", "dailyBars", "orderbooks"),
}
_SERVED = ("trades", "quotes", "bars")
_OVERSIZED = 16 << 20


class _Stop(Exception):
    """The connection ends here (closed by us after an error or an injected failure)."""


class VenueConnection:
    def __init__(self, venue: AlpacaVenue, ws: ServerConnection, shape: Shape, encoding: Encoding):
        self.venue = venue
        self.ws = ws
        self.shape = shape
        self.encoding = encoding
        self.subs: dict[str, set[str]] = {c: set() for c in _CHANNELS[shape]}
        self._subscribed = asyncio.Event()
        self._json = msgspec.json.Decoder(m.Request)
        self._msgpack = msgspec.msgpack.Decoder(m.Request)
        self.counted = False
        """Whether this connection holds one of the venue's authenticated slots."""

    # ---- the whole session
    async def run(self) -> None:
        reader: asyncio.Task | None = None
        try:
            await self._send([{"T": "success", "msg": "connected"}])
            await self._authenticate()
            reader = asyncio.create_task(self._read_requests())
            await self._stream()
        except (_Stop, ConnectionClosed):
            pass
        finally:
            if reader is not None:
                reader.cancel()

    async def _authenticate(self) -> None:
        serving = self.venue.serving
        try:
            raw = await asyncio.wait_for(self.ws.recv(), AUTH_TIMEOUT)
        except TimeoutError:
            await self._fail(404)
        request = self._request(raw)
        if request is None:
            await self._fail(400, close=True)
        assert request is not None
        if request.action != "auth":
            await self._fail(401, close=True)
        if serving.auth_error is not None:
            await self._fail(serving.auth_error)
        if not request.key or not request.secret or (
                serving.key is not None and (request.key, request.secret) != (serving.key, serving.secret)):
            await self._fail(402)
        if serving.connection_limit and self.venue.authenticated >= serving.connection_limit:
            await self._fail(406)
        self.venue.authenticated += 1
        self.counted = True
        await self._send([{"T": "success", "msg": "authenticated"}])

    async def _read_requests(self) -> None:
        """Subscriptions arrive at any time; each is answered with the full set."""
        try:
            async for raw in self.ws:
                request = self._request(raw)
                if request is None:
                    await self._error(400)
                    continue
                if request.action == "auth":
                    await self._error(403)
                    continue
                self._apply(request)
                await self._send([{"T": "subscription", **{c: sorted(s) for c, s in self.subs.items()}}])
                self._subscribed.set()
        except ConnectionClosed:
            pass

    def _apply(self, request: m.Request) -> None:
        for channel, wanted in self.subs.items():
            symbols = getattr(request, channel, None)
            if symbols:
                (wanted.update if request.action == "subscribe" else wanted.difference_update)(symbols)

    # ---- streaming
    async def _stream(self) -> None:
        venue, serving = self.venue, self.venue.serving
        items = serving.stream.items
        await self._subscribed.wait()
        position = venue.position
        start, elapsed, high = time.monotonic(), 0.0, None
        while True:
            if position >= len(items):
                if not serving.loop:
                    await self.ws.wait_closed()
                    return
                position = 0
            batch: list[Item] = []
            while position < len(items) and len(batch) < _FRAME_ITEMS:
                injection = venue.take_injection(position)
                if injection is not None:
                    await self._frame(batch)
                    batch = []
                    await self._inject(injection)
                item = items[position]
                if serving.speed != "max":
                    high = high if high is not None else item.ts_event
                    if item.ts_event > high:
                        elapsed += min((item.ts_event - high) / 1e9, serving.max_gap)
                        high = item.ts_event
                    due = start + elapsed / float(serving.speed)
                    if due > time.monotonic():
                        if batch:
                            break
                        await asyncio.sleep(due - time.monotonic())
                if item.symbol in self.subs[item.channel] or "*" in self.subs[item.channel]:
                    batch.append(item)
                position += 1
                venue.position = max(venue.position, position)
            await self._frame(batch)

    async def _frame(self, batch: list[Item]) -> None:
        if batch:
            frame = self.venue.serving.stream.frame(batch, self.shape, self.encoding)
            await self.ws.send(frame.decode() if self.encoding == "json" else frame)  # JSON goes in text frames
            self.venue.records_sent += len(batch)
        await asyncio.sleep(0)  # a send into a roomy buffer never yields: let requests and pings in

    async def _inject(self, injection: Injection) -> None:
        kind = injection.kind
        log.info("injecting %s at message %d", kind, injection.at)
        symbol = self.venue.serving.stream.symbols[0] if self.venue.serving.stream.symbols else "X"
        if kind == "disconnect":
            await self.ws.close(1011, "venue: injected disconnect")
            raise _Stop
        if kind == "silence":
            self.ws.transport.pause_reading()  # no pongs either: the peer has stopped answering
            await self.ws.wait_closed()  # until the client gives up, or the venue stops (close_timeout)
            raise _Stop
        if kind == "malformed":
            await self.ws.send(b"\xc1\xc1 not a frame" if self.encoding == "msgpack" else "[{not json")
        elif kind == "unknown":
            await self._send([{"T": "zz", "S": symbol, "t": 0}])
        elif kind == "badfield":
            await self._send([{"T": "t", "S": symbol, "i": 1, "p": "abc", "s": 1, "t": 0}])
        elif kind == "oversized":
            await self.ws.send(self._encode([{"T": "n", "headline": "x" * _OVERSIZED}]))
        elif kind == "error":
            await self._fail(injection.arg, close=injection.arg not in _KEEPS_CONNECTION)
        else:
            await self._send([self._void(kind, self.venue.serving.stream.items[injection.arg])])

    def _void(self, kind: str, trade: Item) -> dict:
        f = trade.fields
        if trade.tag != "t":
            raise ValueError(f"`--inject {kind}:{trade}` must name a trade message")
        if kind == "cancel":
            return {"T": "x", "S": trade.symbol, "i": f["i"], "x": f["x"], "p": f["p"], "s": f["s"], "a": "C",
                    "z": f["z"], "t": f["t"]}
        return {"T": "c", "S": trade.symbol, "x": f["x"], "oi": f["i"], "op": f["p"], "os": f["s"], "oc": f["c"],
                "ci": f["i"] + 1_000_000_000, "cp": round(f["p"] * 1.01, 2), "cs": f["s"], "cc": f["c"],
                "z": f["z"], "t": f["t"]}

    # ---- helpers
    def _request(self, raw: str | bytes) -> m.Request | None:
        try:
            if isinstance(raw, str):
                return self._json.decode(raw)
            return self._msgpack.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return None

    def _encode(self, messages: list[dict]) -> bytes | str:
        parts = [encode_fields(msg, self.encoding) for msg in messages]
        if self.encoding == "json":
            return (b"[" + b",".join(parts) + b"]").decode()
        return bytes([0x90 | len(parts)]) + b"".join(parts)

    async def _send(self, messages: list[dict]) -> None:
        await self.ws.send(self._encode(messages))

    async def _error(self, code: int) -> None:
        await self._send([{"T": "error", "code": code, "msg": CODES[code].msg}])

    async def _fail(self, code: int, *, close: bool = True) -> None:
        """Send error `code`; unless told otherwise close the connection and stop."""
        await self._error(code)
        if close:
            await self.ws.close(1008, CODES[code].msg)
            raise _Stop

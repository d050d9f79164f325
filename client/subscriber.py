"""Subscribe to a streamctl plant: typed payloads, callbacks, loss and restart detection.

A `Subscriber` owns one SUB socket connected to the plant's public endpoint (ZeroMQ
reconnects it by itself) and a socket monitor that turns a disconnect followed by a
connect into an ``on_reconnect`` call. Each kind has one msgspec decoder built once, so a
payload arrives as the Struct from `streamctl.bus.wire`.

Dispatch order for one message: every callback registered for its kind, in registration
order (for ``trade``/``quote`` arrays: once per element, oldest first), then every
``on_message`` callback in registration order with ``(topic, payload)`` (the whole list
for arrays). Sequence checking happens before dispatch, so an ``on_error``/``on_reconnect``
call about a message comes before that message's callbacks. An exception raised by a
callback propagates out of `poll`/`run`; the message counts as dispatched.

With the plant's recovery service (on by default: ``docs/wire.md``, "Recovery"), a seq gap is
filled: the missing messages are fetched and dispatched, in order, before the one that showed
the gap; `on_error` hears of a gap only when the service no longer holds it. ``since=`` and
``last=True`` start a subscription from history or from each topic's last value: `subscribe`
subscribes first, then fetches and dispatches what the service holds, and live messages the
history already delivered are dropped (merge by seq), so there is no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, NamedTuple, TypeVar

import msgspec
import zmq
import zmq.asyncio
from zmq.utils.monitor import parse_monitor_message

from streamctl.bus import wire
from streamctl.bus.curve import CurveClient
from streamctl.bus.recovery import recovery_endpoint
from streamctl.bus.sockets import close_socket, queued
from streamctl.client.recovery import History, Stored

__all__ = ["Subscriber", "SequenceGap", "DecodeError", "Reconnect", "SubscriberError"]

_log = logging.getLogger("streamctl.client")

F = TypeVar("F", bound=Callable[..., Any])
_NOBLOCK = zmq.NOBLOCK
_RCVMORE = zmq.RCVMORE

_KIND_CALLBACKS = {
    "bar": "bar",
    "trade": "trade",
    "quote": "quote",
    "vwap": "vwap",
    "sma": "indicator",
    "ema": "indicator",
    "anomaly": "anomaly",
    "book": "book",
    "event": "event",
    "status": "status",
}
"""Topic kind -> callback slot (``sma`` and ``ema`` share ``on_indicator``)."""


class SubscriberError(Exception):
    """Base of what `on_error` callbacks receive."""


class SequenceGap(SubscriberError):
    """Messages were lost on `topic` from publisher `src`: seq `expected` was due, `got` came.

    ``got - expected`` messages are missing (dropped at a high-water mark, or sent while
    this subscriber was disconnected).
    """

    def __init__(self, topic: str, src: str, expected: int, got: int):
        super().__init__(f"sequence gap on `{topic}` from `{src}`: expected seq {expected}, got {got}")
        self.topic = topic
        self.src = src
        self.expected = expected
        self.got = got

    @property
    def missing(self) -> int:
        return self.got - self.expected


class DecodeError(SubscriberError):
    """A message that could not be decoded (bad framing, bad topic or bad payload)."""

    def __init__(self, topic: str, reason: str):
        super().__init__(f"undecodable message on `{topic}`: {reason}")
        self.topic = topic
        self.reason = reason


class Reconnect(NamedTuple):
    """What `on_reconnect` callbacks receive.

    ``reason == "connection"``: the TCP connection to `endpoint` came back after a
    disconnect (``topic``/``src``/``last_seq`` are None). Messages published meanwhile are
    lost and show up as `SequenceGap` errors.

    ``reason == "publisher_restart"``: publisher `src` started over on `topic` (its seq
    went back to 1 after `last_seq`).
    """

    reason: Literal["connection", "publisher_restart"]
    endpoint: str
    topic: str | None = None
    src: str | None = None
    last_seq: int | None = None


def _decoders() -> dict[str, msgspec.msgpack.Decoder]:
    out: dict[str, msgspec.msgpack.Decoder] = {}
    for kind, cls in wire.PAYLOAD_TYPES.items():
        out[kind] = msgspec.msgpack.Decoder(list[cls] if kind in wire.BATCHED_KINDS else cls)  # type: ignore[valid-type]
    return out


class Subscriber:
    """A subscriber to one plant endpoint.

    Parameters
    ----------
    endpoint
        The plant's public endpoint (``publish.endpoint``), e.g. ``tcp://127.0.0.1:5555``.
    rcvhwm
        Receive high-water mark (messages) of the SUB socket.
    context
        A ZeroMQ context; by default one is made and terminated by `close`.
    curve
        CURVE keys for a plant whose endpoint requires them (``publish.curve``):
        ``streamctl.client.load_curve(server_key_file, client_secret_key_file)``.
    recovery
        The plant's recovery endpoint: True (default) derives it from `endpoint` as the plant
        does (``publish.recovery.endpoint``: the port + 1); a string names it; False: none
        (gaps are only reported).
    since
        Start each subscription from history: a `datetime` (messages that reached the plant's
        hub since then), or an int seq (for exact topics: from that seq on).
    last
        Start each subscription with the last message of each matching topic (current bar,
        book, VWAP, indicator), unless `since` is given.
    recovery_timeout
        Seconds to wait for the recovery service's answer.

    Raises ValueError naming the endpoint when ZeroMQ cannot connect to it.
    """

    def __init__(self, endpoint: str, *, rcvhwm: int = 100_000, context: zmq.Context | None = None,
                 curve: CurveClient | None = None, recovery: str | bool = True, since: datetime | int | None = None,
                 last: bool = False, recovery_timeout: float = 2.0):
        self.endpoint = endpoint
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._sock = self._context.socket(zmq.SUB)
        self._sock.linger = 0
        self._sock.rcvhwm = rcvhwm
        if curve is not None:
            curve.apply(self._sock)
        self._monitor = self._sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED)
        try:
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise ValueError(f"cannot connect to `{endpoint}`: {exc}") from None
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._monitor, zmq.POLLIN)
        self._decoders = _decoders()
        self._topics: dict[bytes, tuple[str, str]] = {}
        """Topic frame -> (topic, kind), parsed by `wire` once per topic."""
        self._callbacks: dict[str, list[Callable[..., Any]]] = {
            slot: [] for slot in set(_KIND_CALLBACKS.values())
        }
        self._kind_callbacks = {kind: self._callbacks[slot] for kind, slot in _KIND_CALLBACKS.items()}
        self._on_message: list[Callable[[str, Any], Any]] = []
        self._on_error: list[Callable[[SubscriberError], Any]] = []
        self._on_reconnect: list[Callable[[Reconnect], Any]] = []
        self._seqs: dict[tuple[str, str], int] = {}
        self._last: dict[str, Any] = {}
        self._disconnected = False
        self.connected = False
        """Whether the TCP connection to `endpoint` is up (as last reported by the monitor)."""
        self._logged: set[str] = set()
        self.messages_in = 0
        """Messages dispatched (an array of trades counts once)."""
        self.gaps = 0
        """Sequence gaps seen (one per `SequenceGap`)."""
        self.missed = 0
        """Messages known lost: the sum of ``got - expected`` over the gaps."""
        self.decode_errors = 0
        """Messages that could not be decoded (skipped)."""
        self.restarts = 0
        """Publisher restarts seen (seq back to 1 on a topic)."""
        self.recovered = 0
        """Messages fetched from the recovery service and dispatched (gap fills and starts)."""
        self.duplicates = 0
        """Live messages dropped because history had already delivered them."""
        self._since = since
        self._start_last = last
        self._merged: dict[tuple[str, str], int] = {}
        self._merged_first: dict[tuple[str, str], bytes] = {}
        """Topics whose history began at seq 1: that message's bytes, to tell a live copy of it
        (a duplicate) from a publisher that started over at 1 (not one)."""
        """Topics started from history: live messages up to this seq were delivered already."""
        self._history: History | None = None
        if recovery is not False:
            where = recovery_endpoint(endpoint) if recovery is True else str(recovery)
            self._history = History(where, context=self._context, curve=curve, timeout=recovery_timeout)
        self.reconnects = 0
        """Connection reconnects seen."""

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(self, *patterns: str) -> None:
        """Subscribe to exact topics (``bar.60s.AAPL``) or prefixes (``bar.60s.`` or ``bar.60s.*``).

        An exact topic never matches a longer symbol (``trade.AAPL`` is not ``trade.AAPLX``).
        ``""`` or ``"*"`` subscribes to everything.
        """
        for pattern in patterns:
            self._sock.setsockopt(zmq.SUBSCRIBE, self._prefix(pattern))
        if self._history is not None and (self._since is not None or self._start_last):
            for pattern in patterns:
                self._start(pattern)

    def _start(self, pattern: str) -> None:
        """Dispatch what the service holds for a new subscription (``since`` / ``last``)."""
        assert self._history is not None
        since = self._since
        if isinstance(since, datetime):
            for page in self._history.since(pattern, int(since.timestamp() * 1e9)):
                for message in page:
                    self._replay(message, merged=True)
            return
        if since is not None:
            if pattern.endswith((".", "*")) or pattern == "":
                raise ValueError(f"`since` as a seq needs exact topics; `{pattern}` is a prefix")
            stored, complete = self._history.after(pattern, since - 1)
            if not complete and stored:
                self._gap(pattern, "", since, stored[0][1])
        else:
            stored = self._history.last(pattern)
        for message in stored:
            self._replay(message, merged=True)

    def _replay(self, message: Stored, *, merged: bool) -> None:
        topic, first, last, payload = message
        if self._dispatch([wire.topic_frame(topic), payload]):
            self.recovered += 1
            if merged:
                src = next((src for (t, src) in self._seqs if t == topic), "")
                self._merged[(topic, src)] = last
                if first == 1:
                    self._merged_first[(topic, src)] = payload

    def unsubscribe(self, *patterns: str) -> None:
        """Undo `subscribe` for the same patterns."""
        for pattern in patterns:
            self._sock.setsockopt(zmq.UNSUBSCRIBE, self._prefix(pattern))

    @staticmethod
    def _prefix(pattern: str) -> bytes:
        if not isinstance(pattern, str) or not pattern.isascii() or "\x00" in pattern:
            raise ValueError(f"subscription pattern must be an ASCII string without NUL; was {pattern!r}")
        return wire.subscription_prefix(pattern)

    # -- callbacks (each returns the function, so they work as decorators) ------------------
    # One method per kind, alike on purpose: each documents its payload type, and help(),
    # editors and type checkers see a real method instead of a generated one.

    def _add(self, slot: str, fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"callback must be callable; got {fn!r}")
        self._callbacks[slot].append(fn)
        return fn

    def on_bar(self, fn: F) -> F:
        """``fn(bar: Bar)`` for every ``bar.*`` message."""
        return self._add("bar", fn)

    def on_trade(self, fn: F) -> F:
        """``fn(trade: Trade)`` once per trade of every ``trade.*`` array, oldest first."""
        return self._add("trade", fn)

    def on_quote(self, fn: F) -> F:
        """``fn(quote: Quote)`` once per quote of every ``quote.*`` array, oldest first."""
        return self._add("quote", fn)

    def on_vwap(self, fn: F) -> F:
        """``fn(vwap: Vwap)``."""
        return self._add("vwap", fn)

    def on_indicator(self, fn: F) -> F:
        """``fn(indicator: Indicator)`` for ``sma.*`` and ``ema.*``."""
        return self._add("indicator", fn)

    def on_anomaly(self, fn: F) -> F:
        """``fn(anomaly: Anomaly)``."""
        return self._add("anomaly", fn)

    def on_book_update(self, fn: F) -> F:
        """``fn(book: Book)`` for every ``book.*`` message."""
        return self._add("book", fn)

    def on_event(self, fn: F) -> F:
        """``fn(event: Event)``."""
        return self._add("event", fn)

    def on_status(self, fn: F) -> F:
        """``fn(status: Status)``."""
        return self._add("status", fn)

    def on_message(self, fn: F) -> F:
        """``fn(topic: str, payload)`` for every message, after the kind's callbacks."""
        self._on_message.append(fn)
        return fn

    def on_error(self, fn: F) -> F:
        """``fn(error: SequenceGap | DecodeError)``."""
        self._on_error.append(fn)
        return fn

    def on_reconnect(self, fn: F) -> F:
        """``fn(info: Reconnect)``; see `Reconnect` for the two reasons."""
        self._on_reconnect.append(fn)
        return fn

    def last(self, topic: str) -> Any:
        """The latest payload received on `topic` (a list for trade/quote), or None.

        A per-topic last-value cache: use it instead of ``ZMQ_CONFLATE``, which keeps one
        message for the whole socket.
        """
        return self._last.get(topic)

    def history_after(self, topic: str, seq: int, through: int | None = None) -> tuple[list[Any], bool]:
        """`topic`'s messages holding a seq after `seq` (and not past `through`, when given), from
        the plant's recovery service, decoded as live ones (a trade/quote message as its list),
        oldest first; and whether the service still held seq+1 (False also when there is no
        service). Nothing is dispatched and the seq tracking is left alone: this is for a caller
        that writes idempotently (a sink refilling what it dropped), so overlap with live
        messages is its to ignore.
        """
        if self._history is None:
            return [], False
        stored, complete = self._history.after(topic, seq, through)
        kind = wire.parse_topic(topic).kind
        decode = self._decoders[kind].decode
        out: list[Any] = []
        for _, _, _, payload in stored:
            try:
                out.append(decode(payload))
            except msgspec.DecodeError as exc:
                self._bad(topic, str(exc))
                complete = False
        return out, complete

    # -- receiving ----------------------------------------------------------------------

    def poll(self, timeout: float | None = 1.0, *, max_messages: int = 10_000) -> int:
        """Wait up to `timeout` seconds (None: forever) for messages and dispatch them.

        Returns as soon as something was dispatched and nothing more is queued (or
        `max_messages` were dispatched), or when `timeout` passes; returns the count.
        """
        if max_messages <= 0:
            return 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._sock.closed:
            wait = -1 if deadline is None else max(0, int((deadline - time.monotonic()) * 1000))
            self._poller.poll(wait)
            self._drain_monitor()
            n = self._drain(max_messages) if not self._sock.closed else 0
            if n or (deadline is not None and time.monotonic() >= deadline):
                return n
        return 0

    def run(self, count: int | None = None, timeout: float | None = None) -> int:
        """Dispatch until `count` messages were dispatched or `timeout` seconds passed.

        With neither, runs until `close` is called from a callback or KeyboardInterrupt.
        Never dispatches more than `count`. Returns the number dispatched.
        """
        done = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        while count is None or done < count:
            if self._sock.closed:
                break
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            step = 10_000 if count is None else count - done
            done += self.poll(left if left is not None else 1.0, max_messages=step)
        return done

    async def run_async(self, count: int | None = None, timeout: float | None = None) -> int:
        """`run` for asyncio: waits without blocking the event loop; same callbacks."""
        async_sock = zmq.asyncio.Socket.from_socket(self._sock)
        async_monitor = zmq.asyncio.Socket.from_socket(self._monitor)
        poller = zmq.asyncio.Poller()
        poller.register(async_sock, zmq.POLLIN)
        poller.register(async_monitor, zmq.POLLIN)
        done = 0
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while (count is None or done < count) and not self._sock.closed:
                if deadline is None:
                    wait = 1000
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    wait = max(1, int(left * 1000))
                await poller.poll(wait)
                self._drain_monitor()
                if self._sock.closed:
                    break
                done += self._drain(10_000 if count is None else count - done)
                await asyncio.sleep(0)  # let other tasks run between bursts
        finally:
            poller.unregister(async_sock)
            poller.unregister(async_monitor)
        return done

    def _drain(self, limit: int) -> int:
        # Two plain recv calls: recv_multipart's Python-side list handling costs ~3x
        # (see docs/wire.md); a multipart message is delivered atomically, so the
        # second frame is already there when the first is.
        sock = self._sock
        recv = sock.recv
        get = sock.getsockopt
        n = 0
        while n < limit:
            try:
                frame = recv(_NOBLOCK)
            except zmq.Again:
                break
            if get(_RCVMORE):
                frames = [frame, recv()]
                while get(_RCVMORE):
                    frames.append(recv())
            else:
                frames = [frame]
            if self._dispatch(frames):
                n += 1
            if sock.closed:  # a callback called close()
                break
        return n

    def _drain_monitor(self) -> None:
        for frames in queued(self._monitor.recv_multipart):
            event = parse_monitor_message(frames)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self.connected = False
                self._disconnected = True
                _log.warning("disconnected from `%s`; ZeroMQ is reconnecting", self.endpoint)
            elif event == zmq.EVENT_CONNECTED and not self._disconnected:
                self.connected = True
            elif event == zmq.EVENT_CONNECTED:
                self.connected = True
                self._disconnected = False
                self.reconnects += 1
                info = Reconnect("connection", self.endpoint)
                for fn in self._on_reconnect:
                    fn(info)

    def _error(self, err: SubscriberError) -> None:
        kind = type(err).__name__
        if not self._on_error and kind not in self._logged:
            self._logged.add(kind)
            _log.warning("%s (further ones are only counted; register on_error to see them)", err)
        for fn in self._on_error:
            fn(err)

    def _bad(self, topic: str, reason: str) -> bool:
        self.decode_errors += 1
        self._error(DecodeError(topic, reason))
        return False

    def _dispatch(self, frames: list[bytes]) -> bool:
        if len(frames) != 2:
            return self._bad(repr(frames[0][:64]), f"expected 2 frames (topic, payload), got {len(frames)}")
        frame, data = frames
        known = self._topics.get(frame)
        if known is None:
            try:
                topic = wire.frame_text(frame)
            except ValueError as exc:
                return self._bad(repr(frame[:64]), str(exc))
            try:
                known = self._topics[frame] = (topic, wire.parse_topic(topic).kind)
            except ValueError as exc:
                return self._bad(topic, str(exc))
        topic, kind = known
        decoder = self._decoders[kind]
        try:
            payload = decoder.decode(data)
        except msgspec.DecodeError as exc:
            return self._bad(topic, str(exc))
        if kind in wire.BATCHED_KINDS:
            if not payload:
                return self._bad(topic, "empty array")
            if not self._check_seq(topic, payload[0].src, payload[0].seq, payload[-1].seq, len(payload), data):
                return False
        elif not self._check_seq(topic, payload.src, payload.seq, payload.seq, 1, data):
            return False
        self._last[topic] = payload
        self.messages_in += 1
        callbacks = self._kind_callbacks[kind]
        if callbacks:
            if kind in wire.BATCHED_KINDS:
                for item in payload:
                    for fn in callbacks:
                        fn(item)
            else:
                for fn in callbacks:
                    fn(payload)
        for fn in self._on_message:
            fn(topic, payload)
        return True

    def _check_seq(self, topic: str, src: str, first: int, last: int, count: int, data: bytes) -> bool:
        """Check a message's seq against the last one of its (topic, src); fill a gap from the
        recovery service. False: a live message history already delivered (drop it).

        A live message from seq 1 within what history delivered is a copy only if its bytes are
        those history gave for seq 1; otherwise the publisher started over (a restart)."""
        key = (topic, src)
        merged = self._merged.get(key)
        if merged is not None:
            if last <= merged and (first != 1 or data == self._merged_first.get(key)):
                self.duplicates += 1
                return False
            del self._merged[key]  # live has caught up with the history
            self._merged_first.pop(key, None)
        prev = self._seqs.get(key)
        if prev is not None and first > prev + 1 and self._history is not None and self._history.available:
            prev = self._fill(topic, src, prev, first)
        self._seqs[key] = last
        if prev is not None and first != prev + 1:
            if first <= prev:
                # Seq went back: the publisher started over. If its first messages were lost
                # as well (first > 1), that is also a gap.
                self.restarts += 1
                info = Reconnect("publisher_restart", self.endpoint, topic, src, prev)
                for fn in self._on_reconnect:
                    fn(info)
                if first > 1:
                    self._gap(topic, src, 1, first)
            else:
                self._gap(topic, src, prev + 1, first)
        if last - first != count - 1:
            # Elements of one array are consecutive by construction; check rather than trust.
            self._gap(topic, src, first + count, last + 1)
        return True

    def _fill(self, topic: str, src: str, prev: int, first: int) -> int:
        """Dispatch `topic`'s messages prev+1 .. first-1 from the service; the last seq dispatched."""
        assert self._history is not None
        stored, _ = self._history.between(topic, prev + 1, first)
        for message in stored:
            self._replay(message, merged=False)
        return self._seqs.get((topic, src), prev)

    def _gap(self, topic: str, src: str, expected: int, got: int) -> None:
        self.gaps += 1
        self.missed += max(0, got - expected)
        self._error(SequenceGap(topic, src, expected, got))

    # -- lifetime -----------------------------------------------------------------------

    def close(self) -> None:
        """Close the sockets (and the context if the subscriber made it). Idempotent."""
        close_socket(self._sock, self._monitor, self._context if self._own_context else None)

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""A worker's side of the wire: numbered, encoded messages onto the plant's proxy.

One `Publisher` per process. It owns an XPUB socket connected to the proxy's internal XSUB
(an XPUB sends like a PUB, and lets `wait_subscribed` see the hub's subscriptions arrive),
keeps a sequence number per topic (from 1, so subscribers detect loss per topic and a
restart by the seq going back to 1), stamps ``src`` and encodes with one msgspec encoder
built once. A PUB never blocks: at its high-water mark it drops, which subscribers see
as sequence gaps (see `docs/wire.md`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

import msgspec
import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from streamctl.bus import rawpack, wire
from streamctl.bus.curve import CurveClient
from streamctl.bus.messages import Messages, Topics
from streamctl.bus.sockets import close_socket, queued, stop_monitor
from streamctl.shm.records import PRICE_SCALE, UNDEF_PRICE, Kind

if TYPE_CHECKING:
    from streamctl.bus.native_send import NativeSender, Outbox
    from streamctl.bus.native_trades import TradeTopics

__all__ = ["Publisher"]

_SNDMORE = zmq.SNDMORE
_SMALL_BATCH = 16
"""Up to this many records, `publish_raw` writes trades in msgspec's form (`native_trades`) and
builds Structs for quotes; above, both take `rawpack`'s fixed layout."""
_UNKNOWN_ROW = -2
"""A symbol index whose trade topic row is not looked up yet (`native_trades`)."""
_TRADE_SIDE: dict[int, Literal["B", "S", "N"]] = {1: "B", 2: "S"}
_DRAIN_EVERY = 4096
"""Messages sent between reads of the subscription notices the XPUB queues (so they stay few)."""


class _Topic:
    """Per-topic state: the topic, its encoded frame, the last sequence number, the payload type."""

    __slots__ = ("text", "frame", "seq", "payload_type", "batched")

    def __init__(self, text: str, payload_type: type, batched: bool):
        self.text = text
        self.frame = wire.topic_frame(text)
        self.seq = 0
        self.payload_type = payload_type
        self.batched = batched


class _TableTopic(_Topic):
    """A raw trade topic: its seq lives in the row `row` of a `TradeTopics` table, where the
    compiled packer numbers it."""

    __slots__ = ("table", "row")

    def __init__(self, text: str, table: TradeTopics, row: int):
        self.table = table
        self.row = row
        super().__init__(text, wire.Trade, True)

    @property  # type: ignore[override]
    def seq(self) -> int:
        return int(self.table.seqs[self.row])

    @seq.setter
    def seq(self, value: int) -> None:
        self.table.seqs[self.row] = value


class Publisher:
    """Publish payloads on topics through the proxy.

    Parameters
    ----------
    endpoint
        The proxy's internal XSUB endpoint (``Proxy.frontend_endpoint``).
    src
        This publisher's name, stamped into every payload (``worker-0``...).
    sndhwm
        High-water mark of the PUB socket, in messages; beyond it messages are dropped.
    context
        A ZeroMQ context to use; by default the publisher makes its own and terminates
        it on `close` (which waits up to `linger` ms to flush queued messages).
    curve
        CURVE client keys for the proxy's internal endpoint (the plant's, from the spec);
        None for a proxy without authentication.

    Create it in the process that uses it (sockets are not fork-safe). `publish` sets
    ``payload.seq`` and ``payload.src`` on the Struct it is given.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        src: str,
        sndhwm: int = 100_000,
        context: zmq.Context | None = None,
        linger: int = 1000,
        curve: CurveClient | None = None,
    ):
        if not src or not src.isascii():
            raise ValueError(f"`src` must be a non-empty ASCII name; was {src!r}")
        if sndhwm < 0:
            raise ValueError(f"`sndhwm` must be >= 0; was {sndhwm}")
        self.endpoint = endpoint
        self.src = src
        self._own_context = context is None
        self._context = zmq.Context() if context is None else context
        self._sock = self._context.socket(zmq.XPUB)
        self._sock.sndhwm = sndhwm
        self._sock.linger = linger
        if curve is not None:
            curve.apply(self._sock)
        self._subscribed = False
        self._next_drain = _DRAIN_EVERY
        # Watch for the handshake before connecting, so `wait_connected` cannot miss it.
        self._monitor: zmq.Socket | None = self._sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)
        self._connected = False
        self._sock.connect(endpoint)
        self._encode = msgspec.msgpack.Encoder().encode
        self._topics: dict[str, _Topic] = {}
        self._raw_topics: dict[tuple[str, str], _Topic] = {}
        self._layouts: dict[str, rawpack._Layout] = {}
        """Per symbol, the row layout of its quotes."""
        self._trade_table: TradeTopics | None = None
        """The raw trade topics (made on first use: it loads numba)."""
        self._trade_rows = np.zeros(0, dtype=np.int64)
        """Symbol index -> row in `_trade_table`, for the names in `_trade_rows_for`."""
        self._trade_rows_for: list[str] = []
        self.messages_out = 0
        """Messages handed to ZeroMQ (a batch is one message)."""
        self.raw_skipped = 0
        """Records given to `publish_raw` with a negative symbol index (not published)."""
        self.muted_until = 0
        """Messages numbered below this count are sequenced but not sent (see `mute_until`)."""
        self._muted_topics: dict[str, int] | None = None
        self._sent_mark: np.ndarray | None = None
        self._native: NativeSender | None = None
        self._outbox: Outbox | None = None
        """The messages `flush` sends next, in one compiled call (made on first use, as the sender)."""
        self._frame_tables: dict[int, tuple[Topics, int, np.ndarray, np.ndarray]] = {}
        """Per `Topics` table published from: its size when built, its frames joined, their ends."""

    # -- restart ------------------------------------------------------------------------

    def mute_until(self, count: int) -> None:
        """Number but do not send messages until `messages_out` reaches `count`.

        A restarted worker replays its journal through its calculators: the messages its
        previous life already handed over are numbered again (so every topic's ``seq`` goes
        on where it was) but not sent twice.
        """
        if count < 0:
            raise ValueError(f"`count` must be >= 0; was {count}")
        self.muted_until = count

    def mute_topics(self, seqs: dict[str, int] | None) -> None:
        """While set (instead of `mute_until`), a message is sent only if its seq is past
        ``seqs[topic]``, what the hub already forwarded on that topic (0 for a topic it never
        got). None ends it."""
        self._muted_topics = None if seqs is None else dict(seqs)

    def sequences(self) -> dict[str, int]:
        """The last seq of every topic published so far (a worker checkpoint's part)."""
        seqs = {text: entry.seq for text, entry in self._topics.items()}
        for topics, _, _, _ in self._frame_tables.values():  # numbered by their producer
            seqs.update(zip(topics.texts, topics.seqs[:len(topics)].tolist(), strict=True))
        return seqs

    def resume_sequences(self, seqs: dict[str, int], messages_out: int) -> None:
        """Go on from `sequences` and `messages_out` saved by an earlier life of this publisher
        (a worker restored from a checkpoint): the next message on each topic is its seq + 1."""
        for text, seq in seqs.items():
            self._entry(text, wire.parse_topic(text).kind in wire.BATCHED_KINDS).seq = seq
        self.messages_out = messages_out
        self._next_drain = messages_out + _DRAIN_EVERY

    def _sending(self, entry: _Topic, last_seq: int) -> bool:
        """Whether the next message (on `entry`, ending at `last_seq`) goes out (see the mutes)."""
        muted = self._muted_topics
        if muted is not None:
            return last_seq > muted.get(entry.text, 0)
        return self.messages_out + (self._outbox.count if self._outbox else 0) >= self.muted_until

    def record_sent(self, mark: np.ndarray | None) -> None:
        """After each message handed to ZeroMQ, store `messages_out` into ``mark[0]`` (an int64
        in a file mapping that outlives this process: the worker's published watermark)."""
        self._sent_mark = mark

    def _sent(self, n: int = 1) -> None:
        self.messages_out += n
        if self._sent_mark is not None and self.messages_out > self.muted_until:
            self._sent_mark[0] = self.messages_out
        if self.messages_out >= self._next_drain:
            self._drain_subscriptions()

    # -- topics -------------------------------------------------------------------------

    def _register(self, topic: str, batched: bool) -> _Topic:
        kind = wire.parse_topic(topic).kind
        is_batched = kind in wire.BATCHED_KINDS
        if is_batched != batched:
            how = "publish_batch (an array of maps)" if is_batched else "publish (a single map)"
            raise ValueError(f"topic `{topic}` must be sent with {how}")
        entry = _Topic(topic, wire.PAYLOAD_TYPES[kind], is_batched)
        self._topics[topic] = entry
        return entry

    def _entry(self, topic: str, batched: bool) -> _Topic:
        entry = self._topics.get(topic)
        if entry is None or entry.batched != batched:
            entry = self._register(topic, batched)
        return entry

    def _raw_entry(self, kind: str, symbol: str) -> _Topic:
        """The entry of ``trade.SYMBOL``/``quote.SYMBOL``, built by `wire.topic` once per symbol.

        A trade topic's becomes a row of the trade table, going on from any seq it had."""
        entry = self._raw_topics.get((kind, symbol))
        if entry is None:
            text = wire.topic(kind, symbol)
            entry = self._entry(text, True)
            if kind == "trade":
                seq, table = entry.seq, self._trades()
                entry = self._topics[text] = _TableTopic(text, table, table.add(text, symbol))
                entry.seq = seq
            self._raw_topics[(kind, symbol)] = entry
        return entry

    def _trades(self) -> TradeTopics:
        """The raw trade topics' table (made on first use: it loads numba)."""
        if self._trade_table is None:
            from streamctl.bus.native_trades import TradeTopics

            self._trade_table = TradeTopics(self.src)
        return self._trade_table

    def _trade_row(self, symbol: str) -> int:
        entry = self._raw_entry("trade", symbol)
        assert isinstance(entry, _TableTopic)
        return entry.row

    def sequence(self, topic: str) -> int:
        """The last sequence number sent on `topic` (0 if none)."""
        return self.sequences().get(topic, 0)

    # -- sending ------------------------------------------------------------------------

    def publish(self, topic: str, payload: msgspec.Struct) -> None:
        """Send one payload (a single map) on `topic`."""
        entry = self._topics.get(topic)
        if entry is None or entry.batched:
            entry = self._entry(topic, False)
        for topics, _, _, _ in self._frame_tables.values():  # go on from batches sent on this topic
            entry.seq = max(entry.seq, topics.last_seq(topic))
        if payload.__class__ is not entry.payload_type:
            raise TypeError(
                f"topic `{topic}` carries {entry.payload_type.__name__}; got {type(payload).__name__}"
            )
        entry.seq += 1
        payload.seq = entry.seq  # type: ignore[attr-defined]
        payload.src = self.src  # type: ignore[attr-defined]
        if self._sending(entry, entry.seq):
            sock = self._sock
            sock.send(entry.frame, _SNDMORE)
            sock.send(self._encode(payload))
        self._sent()

    def publish_many(self, items: Iterable[tuple[str, msgspec.Struct]]) -> None:
        """`publish` each ``(topic, payload)`` in order."""
        publish = self.publish
        for topic, payload in items:
            publish(topic, payload)

    def publish_messages(self, messages: Messages) -> None:
        """Send a batch of messages encoded and numbered by their producer (`bus.messages`).

        Their ``src`` must be this publisher's; each topic's sequence goes on from their
        ``seq`` (a later `publish` on the topic continues it).
        """
        self.flush()  # what was held back goes first
        if not messages:
            return
        if messages.src != self.src:
            raise ValueError(f"messages stamped `src` {messages.src!r}; this publisher is {self.src!r}")
        if self._muted_topics is None and self.messages_out >= self.muted_until:  # all of them go out
            frames, frame_ends = self._frame_table(messages.topics)
            self._sender().send_messages(frames, frame_ends, messages.tids, messages.data, messages.ends)
            self._sent(len(messages))
            return
        texts = messages.topics.texts
        topics = self._topics
        data = messages.data.data  # a memoryview: slices are not copied
        sock = self._sock
        start = 0
        for tid, end, seq in zip(messages.tids.tolist(), messages.ends.tolist(), messages.seqs.tolist(),
                                 strict=True):
            text = texts[tid]
            entry = topics.get(text)
            if entry is None or entry.batched:
                entry = self._entry(text, False)
            entry.seq = seq
            if self._sending(entry, seq):
                sock.send(entry.frame, _SNDMORE)
                sock.send(data[start:end])
            start = end
            self._sent()

    def _frame_table(self, topics: Topics) -> tuple[np.ndarray, np.ndarray]:
        """`topics`' frames joined, and where each ends (built again when topics were added)."""
        table = self._frame_tables.get(id(topics))
        if table is None or table[0] is not topics or table[1] != len(topics):
            frames = np.frombuffer(bytearray(b"".join(topics.frames)), dtype=np.uint8)  # writable: the warmed type
            ends = np.cumsum(np.fromiter(map(len, topics.frames), dtype=np.int64, count=len(topics)))
            table = self._frame_tables[id(topics)] = (topics, len(topics), frames, ends)
        return table[2], table[3]

    def _sender(self) -> NativeSender:
        """The compiled sender, made on first use (a process that only `publish`es never loads numba)."""
        if self._native is None:
            from streamctl.bus.native_send import NativeSender

            self._native = NativeSender(self._sock)
        return self._native

    def _hold(self, frame: bytes, payload: bytes) -> None:
        """Put a message in the outbox, for the next `flush`."""
        if self._outbox is None:
            from streamctl.bus.native_send import Outbox

            self._outbox = Outbox()
        self._outbox.add(frame, payload)

    def flush(self) -> None:
        """Send the messages held back (`publish_raw`'s `hold`) in one call, then count them sent."""
        outbox = self._outbox
        if outbox is not None and outbox.parts:
            count = outbox.count
            self._sender().send(outbox)
            self._sent(count)

    def publish_batch(self, topic: str, payloads: list[msgspec.Struct]) -> None:
        """Send `payloads` (oldest first) as one array message on a ``trade``/``quote`` topic.

        Each element gets its own sequence number; an empty list sends nothing.
        """
        if payloads:
            self._send_batch(self._entry(topic, True), payloads)
            self.flush()

    def _send_batch(self, entry: _Topic, payloads: list[Any]) -> None:
        """Number `payloads` and put them in the outbox as one message (unless muted)."""
        cls = entry.payload_type
        seq = entry.seq
        src = self.src
        for p in payloads:
            if p.__class__ is not cls:
                raise TypeError(f"topic `{entry.text}` carries {cls.__name__}; got {type(p).__name__}")
            seq += 1
            p.seq = seq  # type: ignore[attr-defined]
            p.src = src  # type: ignore[attr-defined]
        entry.seq = seq
        if self._sending(entry, seq):
            self._hold(entry.frame, self._encode(payloads))
        else:
            self._sent()  # numbered and counted, not sent

    def publish_raw(
        self,
        records: np.ndarray,
        symbols: list[str],
        sym_idx: np.ndarray,
        *,
        trades: bool,
        quotes: bool,
        hold: bool = False,
    ) -> int:
        """Publish the raw ``trade.SYM`` / ``quote.SYM`` topics of a record batch.

        Parameters
        ----------
        records
            A `RECORD_DTYPE` batch in arrival order.
        symbols
            Symbol names; ``symbols[sym_idx[i]]`` is the symbol of ``records[i]``.
        sym_idx
            One index per record; negative entries are skipped (counted in `raw_skipped`).
        trades, quotes
            Which raw topics to publish (``publish.raw_trades`` / ``publish.raw_quotes``).
        hold
            Leave the messages for the next `publish_messages` or `flush` to send with its own
            (a worker sends a batch's raw ticks and its calculators' outputs together: every
            hand-over to ZeroMQ that finds its I/O thread asleep wakes it, at 20-40 us here).

        One message per topic per call: an array of maps, oldest first, each with its own
        sequence number. Returns the number of messages sent.
        """
        if len(sym_idx) != len(records):
            raise ValueError(f"`sym_idx` has {len(sym_idx)} entries for {len(records)} records")
        sent = 0
        if not (trades or quotes) or len(records) == 0:
            return 0
        small = len(records) <= _SMALL_BATCH
        if trades:
            packed = self._pack_trades(records, symbols, sym_idx, fixed=not small)
            if packed is not None:
                sent, trades = packed, False
        if small:
            sent += self._publish_raw_small(records, symbols, sym_idx, trades, quotes)
        elif quotes:
            sent += self._publish_quotes(records, symbols, sym_idx, records["kind"] == Kind.QUOTE)
        if not hold:
            self.flush()
        return sent

    def _publish_raw_small(self, records: np.ndarray, symbols: list[str], sym_idx: np.ndarray, trades: bool,
                           quotes: bool) -> int:
        """`publish_raw` of quotes (and of trades at prices `_pack_trades` leaves) for a handful
        of records (live, low rates): plain Structs cost less than setting up the vectorized
        packer, and latency is what matters here."""
        if not (trades or quotes):
            return 0
        trade_groups: dict[str, list[wire.Trade]] = {}
        quote_groups: dict[str, list[wire.Quote]] = {}
        for record, symbol_index in zip(records.tolist(), sym_idx.tolist(), strict=True):
            ts_event, ts_recv, price, price2, size, size2, _, _, kind, side, _, _ = record
            if kind == Kind.TRADE and trades:
                if symbol_index < 0:
                    self.raw_skipped += 1
                    continue
                trade_groups.setdefault(symbols[symbol_index], []).append(wire.Trade(
                    symbol=symbols[symbol_index], ts_event=ts_event, ts_recv=ts_recv, price=price / PRICE_SCALE,
                    size=size, side=_TRADE_SIDE.get(side, "N")))
            elif kind == Kind.QUOTE and quotes:
                if symbol_index < 0:
                    self.raw_skipped += 1
                    continue
                quote_groups.setdefault(symbols[symbol_index], []).append(wire.Quote(
                    symbol=symbols[symbol_index], ts_event=ts_event, ts_recv=ts_recv,
                    bid=None if price == UNDEF_PRICE else price / PRICE_SCALE,
                    ask=None if price2 == UNDEF_PRICE else price2 / PRICE_SCALE, bid_size=size, ask_size=size2))
        for symbol, trades_of_symbol in trade_groups.items():
            self._send_batch(self._raw_entry("trade", symbol), trades_of_symbol)
        for symbol, quotes_of_symbol in quote_groups.items():
            self._send_batch(self._raw_entry("quote", symbol), quotes_of_symbol)
        return len(trade_groups) + len(quote_groups)

    def _pack_trades(self, records: np.ndarray, symbols: list[str], sym_idx: np.ndarray, *, fixed: bool
                     ) -> int | None:
        """Put the trade messages of `records` in the outbox by one compiled call (`native_trades`;
        `fixed`: `rawpack`'s layout of large batches); returns how many, or None (nothing done)
        for a price it leaves to Structs. Muted messages are numbered and counted, not sent."""
        if self._outbox is None:
            from streamctl.bus.native_send import Outbox

            self._outbox = Outbox()
        outbox = self._outbox
        if symbols != self._trade_rows_for:  # a list comparison: item identity first
            self._trade_rows = np.full(len(symbols), _UNKNOWN_ROW, dtype=np.int64)
            self._trade_rows_for = list(symbols)
        rows = self._trade_rows
        table = self._trades()
        while True:
            muted = self._muted_topics
            floors = None if muted is None else np.array([muted.get(text, 0) for text in table.texts], np.int64)
            messages, skipped, unsent = table.pack(records, sym_idx, rows, outbox, fixed=fixed, floors=floors,
                                                   count0=self.messages_out + outbox.count,
                                                   muted_until=self.muted_until if muted is None else 0)
            if messages != _UNKNOWN_ROW:
                break
            for index in np.unique(sym_idx[records["kind"] == Kind.TRADE]).tolist():  # first sight of a symbol
                if 0 <= index < len(symbols) and rows[index] == _UNKNOWN_ROW:
                    rows[index] = self._trade_row(symbols[index]) if symbols[index] else -1
        if messages < 0:
            return None
        self.raw_skipped += skipped
        if unsent:
            self._sent(unsent)  # numbered and counted, not sent
        return messages

    def _publish_quotes(self, records: np.ndarray, symbols: list[str], sym_idx: np.ndarray, mask: np.ndarray
                        ) -> int:
        """`publish_raw` of the quotes of a large batch (`mask`), packed as arrays (`rawpack`)."""
        rows = np.flatnonzero(mask)
        if len(rows) == 0:
            return 0
        symbol_indices = sym_idx[rows]
        negative = symbol_indices < 0
        if negative.any():
            self.raw_skipped += int(negative.sum())
            rows = rows[~negative]
            symbol_indices = symbol_indices[~negative]
            if len(rows) == 0:
                return 0
        identity = len(rows) == len(records)  # every record of the batch, in batch order
        if (symbol_indices == symbol_indices[0]).all():
            starts = np.zeros(1, dtype=np.intp)
            sorted_indices = symbol_indices[:1]
        else:
            identity = False
            order = np.argsort(symbol_indices, kind="stable")  # stable: each group stays oldest first
            rows = rows[order]
            sorted_indices = symbol_indices[order]
            starts = np.concatenate(([0], np.flatnonzero(sorted_indices[1:] != sorted_indices[:-1]) + 1))
        # Gather once through a uint64 view: numpy copies structured rows field by field,
        # ~15x slower than the same bytes as plain words. Groups are then views.
        if identity:  # every record, in batch order: nothing to gather
            selected = records
        elif records.flags.c_contiguous:
            selected = records.view(np.uint64).reshape(len(records), -1)[rows].view(records.dtype).reshape(-1)
        else:
            selected = records[rows]
        ends = np.append(starts[1:], len(rows))
        groups = [(int(sorted_indices[start]), selected[start:end])
                  for start, end in zip(starts.tolist(), ends.tolist(), strict=True)]
        for symbol_index, batch in groups:
            symbol = symbols[symbol_index]
            entry = self._raw_entry("quote", symbol)
            layout = self._layouts.get(symbol)
            if layout is None:
                layout = self._layouts[symbol] = rawpack.quote_layout(self.src, symbol)
            if self._sending(entry, entry.seq + len(batch)):
                self._hold(entry.frame, rawpack.pack_quotes(layout, batch, entry.seq + 1))
            else:
                self._sent()  # numbered and counted, not sent
            entry.seq += len(batch)
        return len(groups)

    # -- connection ---------------------------------------------------------------------

    def wait_connected(self, timeout: float) -> bool:
        """Wait until the ZeroMQ handshake with the proxy has completed.

        This says the proxy can receive; it does not say any subscriber's subscription
        has reached this PUB yet (for that, wait for a first message on the subscriber).
        """
        if self._connected or self._monitor is None:
            return self._connected

        deadline = time.monotonic() + timeout
        while not self._connected:
            left = deadline - time.monotonic()
            if left <= 0 or not self._monitor.poll(int(left * 1000) + 1):
                return self._connected
            event = recv_monitor_message(self._monitor)
            if event["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self._connected = True
        stop_monitor(self._sock, self._monitor)
        self._monitor = None
        return True

    def wait_subscribed(self, timeout: float) -> bool:
        """Wait until the hub's subscriptions have reached this publisher (at most `timeout` s).

        A new connection gets the subscriptions some 100 ms after it is made; whatever is
        published before they arrive is dropped (the slow joiner). The hub sends
        `wire.SYNC_SUBSCRIPTION` after all the others, so once it is here every subscriber's
        subscription is too. False on timeout (no hub): messages sent then are lost.
        """
        deadline = time.monotonic() + timeout
        sock = self._sock
        while not self._subscribed:
            left = deadline - time.monotonic()
            if left <= 0 or not sock.poll(int(left * 1000) + 1):
                return False
            self._drain_subscriptions()
        return True

    def _drain_subscriptions(self) -> None:
        """Read the subscription notices the XPUB has queued (it filters by itself)."""
        self._next_drain = self.messages_out + _DRAIN_EVERY
        for notice in queued(self._sock.recv):
            if notice[1:] == wire.SYNC_SUBSCRIPTION:
                self._subscribed = True

    def close(self) -> None:
        """Close the socket (flushing queued messages for up to `linger` ms). Idempotent."""
        close_socket(self._sock, self._monitor, self._context if self._own_context else None)
        self._monitor = None

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

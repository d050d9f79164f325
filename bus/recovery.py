"""The recovery service: recent messages and the last value of every topic, from the hub.

It runs in the hub process, on a thread fed by the proxy's capture socket: it sees every
message exactly as the hub forwards it, in order, with no extra hop and no extra subscriber on
the public endpoint. Per topic it keeps the messages of the last `topic_bytes` bytes (the
payloads as sent, so a reply needs no re-encoding) and so the last value. It answers
MessagePack requests on a ROUTER socket (REQ and DEALER clients both work) bound on the public
recovery endpoint (with ``publish.curve``'s keys, as the public XPUB) and on an internal one
(the plant's own keys, as the internal XSUB), where a restarted worker asks what the hub
already has from it. `docs/wire.md` ("Recovery") is the protocol.

With an output journal (`streamctl.bus.history`, on by default in a live plant that journals),
every captured message is also appended to disk, and what memory no longer holds is read from
there: memory answers the recent past quickly, the disk reaches back as far as retention keeps.
Disk writes and reads run in this thread, not the forwarding one: the proxy forwards in
ZeroMQ's C thread and only hands this thread copies through a 500,000-message capture queue,
so a slow disk delays history, never live messages. A read is bounded (one reply: at most
`MAX_REPLY` messages, `SCAN_BYTES` of scanning), and captures are taken between replies.
Without it, history older than a topic's budget is gone (``complete: false``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import zmq
from msgspec import Meta

from streamctl.bus import wire
from streamctl.bus.curve import INTERNAL_DOMAIN, PUBLIC_DOMAIN, CurveClient, CurveServer
from streamctl.bus.history import Found, HistoryConfig, HistoryJournal
from streamctl.bus.sockets import queued

if TYPE_CHECKING:
    from streamctl.bus.native_recv import NativeReceiver

__all__ = ["RecoveryConfig", "RecoveryService", "recovery_endpoint", "internal_recovery_endpoint", "MAX_REPLY",
           "ask", "service_binds"]

log = logging.getLogger("streamctl.recovery")

MAX_REPLY = 10_000
"""Messages in one reply at most; ``more: true`` says ask again from the next seq."""
_APPEND_EVERY = 4096
"""Messages handed to the output journal at once: a long queue (after a slow disk open) is not
held twice in memory."""
GATHER_S = 0.005
"""After taking the captures, the thread lets new ones queue this long (a request ends the
wait at once, and takes them first): at live rates the proxy hands over a burst or two per
millisecond, and each take costs a wake-up, a poll and a disk write whatever it holds."""


class RecoveryConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    endpoint: str | None = None
    """Where subscribers ask; ``null``: the public endpoint's port + 1 (``ipc://P`` -> ``ipc://P.recovery``)."""
    topic_bytes: Annotated[int, Meta(ge=1024, le=1 << 30)] = 4 << 20
    """Per topic, the most recent messages up to this many payload bytes are kept in memory."""
    history: HistoryConfig = HistoryConfig()
    """The output journal: every message on disk, for history older than memory."""


def recovery_endpoint(public: str, configured: str | None = None) -> str:
    """The recovery endpoint of a plant whose public endpoint is `public`."""
    if configured:
        return configured
    if public.startswith("tcp://"):
        host, _, port = public[len("tcp://"):].rpartition(":")
        return f"tcp://{host}:{int(port) + 1}"
    return public + ".recovery"


def internal_recovery_endpoint(internal: str) -> str:
    """Beside the hub's internal endpoint (``ipc://DIR/<plant>.pub`` -> ``ipc://DIR/<plant>.rec``,
    so `streamctl clean` finds it by the plant's name): where the plant's own processes ask."""
    return (internal[:-len(".pub")] if internal.endswith(".pub") else internal) + ".rec"


def ask(endpoint: str, request: dict[str, Any], *, timeout: float, curve: CurveClient | None = None,
        context: zmq.Context | None = None) -> dict[str, Any] | None:
    """One request to a recovery service; its reply, or None if none came within `timeout` s.

    A REQ socket per request: a lost reply leaves nothing behind, and the service answers in
    the order it was asked."""
    ctx = context or zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    try:
        if curve is not None:
            curve.apply(sock)
        sock.connect(endpoint)
        sock.send(msgspec.msgpack.encode(request))
        if not sock.poll(int(timeout * 1000)):
            return None
        return msgspec.msgpack.decode(sock.recv(), type=dict[str, Any])
    finally:
        sock.close(0)


class _Seq(msgspec.Struct):
    seq: int = 0
    src: str = ""


class _History:
    """One topic's recent messages: ``(first seq, last seq, arrival ns, payload)``; arrival
    times are the hub's wall clock made strictly increasing, so they order every topic's messages."""

    __slots__ = ("items", "bytes", "frame", "dropped_ns")

    def __init__(self, frame: bytes):
        self.items: deque[tuple[int, int, int, bytes]] = deque()
        self.bytes = 0
        self.frame = frame
        self.dropped_ns = 0
        """The arrival of the newest message let go: memory holds everything after it."""

    def add(self, item: tuple[int, int, int, bytes], budget: int) -> None:
        if self.items and item[0] != self.items[-1][1] + 1:
            self.dropped_ns = self.items[-1][2]
            self.items.clear()  # a gap or a new publisher session: what came before no longer joins up
            self.bytes = 0
        self.items.append(item)
        self.bytes += len(item[3])
        while self.bytes > budget and len(self.items) > 1:
            dropped = self.items.popleft()
            self.bytes -= len(dropped[3])
            self.dropped_ns = dropped[2]


class RecoveryService:
    """The service thread. `start` after the proxy is bound (it connects to `capture`)."""

    def __init__(self, context: zmq.Context, *, capture: str, binds: list[tuple[str, CurveServer | None, str]],
                 topic_bytes: int, history: HistoryConfig | None = None, history_dir: str | None = None,
                 run: int = 0, gather_s: float = GATHER_S):
        self._context = context
        self._gather_ms = max(0, round(gather_s * 1000))
        self._capture = capture
        self._binds = binds
        self._budget = topic_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._topics: dict[str, _History] = {}
        self._frames: dict[bytes, tuple[str, bool, _History]] = {}
        """Per topic frame as it arrives: the topic, whether its payloads are arrays, its history."""
        self._last_seq: dict[str, dict[str, int]] = {}
        """src -> topic -> last seq the hub forwarded."""
        self._one = msgspec.msgpack.Decoder(_Seq)
        self._many = msgspec.msgpack.Decoder(list[_Seq])
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode_request = msgspec.msgpack.Decoder(dict[str, Any]).decode
        self.requests = 0
        self.bad_requests = 0
        self._history_config = history if history_dir is not None else None
        self._history_dir = history_dir
        self._run_id = run
        self.disk: HistoryJournal | None = None
        """The output journal, once the thread opened it (None: memory only)."""
        self._last_ts = 0
        self._started_ns = 0

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._run, name="streamctl-recovery", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("recovery service did not start")
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        sockets: list[zmq.Socket] = []
        try:
            capture = self._context.socket(zmq.SUB)
            sockets.append(capture)
            capture.rcvhwm = 500_000
            capture.setsockopt(zmq.SUBSCRIBE, b"")
            capture.connect(self._capture)
            routers = []
            for endpoint, curve, domain in self._binds:
                router = self._context.socket(zmq.ROUTER)
                sockets.append(router)
                router.linger = 0
                if curve is not None:
                    curve.apply(router, domain)
                router.bind(endpoint)
                routers.append(router)
        except BaseException as exc:
            self._error = exc
            for sock in sockets:
                sock.close(0)
            self._ready.set()
            return
        self._ready.set()
        self._open_disk()
        # numba is imported here, after `start` returned (as the disk is opened), not as the hub starts
        from streamctl.bus.native_recv import NativeReceiver

        receiver = NativeReceiver(capture)
        self._started_ns = self._last_ts = max(time.time_ns(), self._last_ts + 1)
        poller, requests = zmq.Poller(), zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        for router in routers:
            requests.register(router, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                self._serve(receiver, routers, ready)
                if capture in ready:
                    self._take(receiver)
                    if self._gather_ms:  # captures queue meanwhile; only a request is served before they are taken
                        self._serve(receiver, routers, dict(requests.poll(self._gather_ms)))
        finally:
            for sock in sockets:
                sock.close(0)
            if self.disk is not None:
                try:
                    self.disk.close()
                except OSError as exc:
                    log.error("recovery: output journal at `%s` not closed cleanly: %s", self._history_dir, exc)

    def _serve(self, capture: NativeReceiver, routers: list[zmq.Socket], ready: dict[zmq.Socket, int]) -> None:
        for router in routers:
            if router in ready:
                self._take(capture)  # answer with everything the hub has forwarded so far
                self._answer(router)

    def _open_disk(self) -> None:
        """Open the output journal (after `start` returned: a long history takes a while to index,
        and captures queue meanwhile). A disk that fails costs the history, not the service."""
        if self._history_config is None or self._history_dir is None:
            return
        try:
            self.disk = HistoryJournal(Path(self._history_dir), run=self._run_id, config=self._history_config)
        except OSError as exc:
            log.error("recovery: output journal at `%s` not opened (%s); history from memory only",
                      self._history_dir, exc)
            return
        self._last_ts = self.disk.last_ts

    def _lose_disk(self, exc: OSError) -> None:
        """A write failed (disk full, removed): go on from memory only, and say so once."""
        log.error("recovery: output journal at `%s` failed (%s); history from memory only from now on",
                  self._history_dir, exc)
        disk, self.disk = self.disk, None
        if disk is not None:
            try:
                disk.close()
            except OSError:
                pass  # the failure is already said

    def _take(self, capture: NativeReceiver) -> None:
        """Store every captured message queued (subscription notices, one frame, are skipped),
        in memory and in the output journal (handed over `_APPEND_EVERY` at a time, written once)."""
        records: list[tuple[bytes, int, int, int, bytes]] = []
        budget, frames, last_seq = self._budget, self._frames, self._last_seq
        ts = self._last_ts
        for parts in capture.messages():
            if len(parts) != 2:
                continue
            frame, payload = parts
            try:
                known = frames.get(frame)
                if known is None:  # a topic's first message: its name parsed once, not per message
                    topic = wire.frame_text(frame)
                    batched = wire.parse_topic(topic).kind in wire.BATCHED_KINDS
                    stored = self._topics.get(topic)
                    known = (topic, batched, _History(frame) if stored is None else stored)
                topic, batched, history = known
                if batched:
                    items = self._many.decode(payload)
                    first, last, src = items[0].seq, items[-1].seq, items[0].src
                else:
                    one = self._one.decode(payload)
                    first = last = one.seq
                    src = one.src
            except (ValueError, IndexError, msgspec.DecodeError):
                continue  # the subscribers' problem to count; nothing to keep
            if frame not in frames:
                frames[frame] = known
                self._topics[topic] = history
            ts = self._last_ts = max(time.time_ns(), ts + 1)  # strictly increasing: a `since` cursor
            history.add((first, last, ts, payload), budget)
            topics = last_seq.get(src)
            if topics is None:
                topics = last_seq[src] = {}
            topics[topic] = last
            if self.disk is not None:  # memory only: nothing to hand over
                records.append((frame, first, last, ts, payload))
                if len(records) == _APPEND_EVERY:
                    self._append(records)
        self._append(records)
        if self.disk is not None:
            try:
                self.disk.flush()
            except OSError as exc:
                self._lose_disk(exc)

    def _append(self, records: list[tuple[bytes, int, int, int, bytes]]) -> None:
        """Hand `records` to the output journal (if any) and empty the list."""
        if self.disk is not None and records:
            try:
                self.disk.append_many(records)
            except OSError as exc:
                self._lose_disk(exc)
        records.clear()

    def _answer(self, router: zmq.Socket) -> None:
        for frames in queued(router.recv_multipart):
            self.requests += 1
            try:
                request = self._decode_request(frames[-1])
                reply = self._reply(request)
            except (msgspec.DecodeError, KeyError, TypeError, ValueError) as exc:
                self.bad_requests += 1
                reply = {"ok": False, "error": f"bad request: {exc}"}
            router.send_multipart([*frames[:-1], self._encode(reply)])

    def _reply(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "last":
            return {"ok": True, "messages": self._last(wire.subscription_prefix(str(request["pattern"])))}
        if op == "seqs":
            return {"ok": True, "seqs": dict(self._last_seq.get(str(request["src"]), {}))}
        if op == "history":
            if "topic" in request:
                return self._from_seq(str(request["topic"]), _int64(request, "from_seq"))
            return self._since(wire.subscription_prefix(str(request["pattern"])), _int64(request, "since_ns"))
        raise ValueError(f"`op` must be one of history, last, seqs; was {op!r}")

    def _last(self, prefix: bytes) -> list[list[Any]]:
        """Each topic's last message: from memory, or from disk for a topic this hub has not
        seen yet (it restarted within the run)."""
        last = {topic: [topic, *h.items[-1][:2], h.items[-1][3]] for topic, h in self._topics.items()
                if h.items and h.frame.startswith(prefix)}
        if self.disk is not None:
            for frame in self.disk.topics():
                topic = frame[:-1].decode("ascii")
                if topic not in last and frame.startswith(prefix):
                    found = self.disk.newest(frame)
                    if found is not None:
                        last[topic] = _message(found)
        return [last[topic] for topic in sorted(last)]

    def _from_seq(self, topic: str, from_seq: int) -> dict[str, Any]:
        from_seq = max(from_seq, 1)  # a publisher's first seq is 1: nothing before it is missing
        history = self._topics.get(topic)
        held = history is not None and bool(history.items) and history.items[0][0] <= from_seq
        if not held and self.disk is not None:
            found, complete, more = self.disk.from_seq(wire.topic_frame(topic), from_seq, MAX_REPLY)
            return {"ok": True, "complete": complete, "more": more, "messages": [_message(m) for m in found]}
        if history is None or not history.items:
            return {"ok": True, "complete": False, "more": False, "messages": []}
        items = [item for item in history.items if item[1] >= from_seq]
        complete = history.items[0][0] <= from_seq
        more = len(items) > MAX_REPLY
        return {"ok": True, "complete": complete, "more": more,
                "messages": [[topic, first, last, payload] for first, last, _, payload in items[:MAX_REPLY]]}

    def _since(self, prefix: bytes, since_ns: int) -> dict[str, Any]:
        """A page of messages since `since_ns`: from memory when it holds everything since then,
        else from disk (which holds all memory does); `next_ns` is where the next page starts."""
        floor = max([self._started_ns, *(h.dropped_ns + 1 for h in self._topics.values())])
        if self.disk is not None and since_ns < floor:
            found, next_ns = self.disk.since(prefix, since_ns, MAX_REPLY)
            reply: dict[str, Any] = {"ok": True, "complete": True, "more": next_ns is not None,
                                     "messages": [_message(m) for m in found]}
            if next_ns is not None:
                reply["next_ns"] = next_ns
            return reply
        held = sorted((item[2], topic, item) for topic, h in self._topics.items() if h.frame.startswith(prefix)
                      for item in h.items if item[2] >= since_ns)
        reply = {"ok": True, "complete": True, "more": len(held) > MAX_REPLY,
                 "messages": [[topic, first, last, payload] for _, topic, (first, last, _, payload)
                              in held[:MAX_REPLY]]}
        if reply["more"]:
            reply["next_ns"] = held[MAX_REPLY][0]
        return reply


def _int64(request: dict[str, Any], key: str) -> int:
    """An integer field of a request; a float is taken (a JavaScript client sends ns times as
    doubles), but NaN, an infinity or a value past int64 is a ValueError: ``int(inf)`` raised
    OverflowError, which ended the service's thread."""
    value = request[key]
    try:
        number = int(value)
    except OverflowError:
        raise ValueError(f"`{key}` must be an integer, was {value!r}") from None
    if not -(2**63) <= number < 2**63:
        raise ValueError(f"`{key}` must fit in 64 bits, was {number}")
    return number


def _message(found: Found) -> list[Any]:
    return [found.frame[:-1].decode("ascii"), found.first, found.last, found.payload]


def service_binds(*, internal: str, public: str, internal_curve: CurveServer | None,
                  public_curve: CurveServer | None) -> list[tuple[str, CurveServer | None, str]]:
    """The two endpoints and their keys, as `RecoveryService` takes them."""
    return [(internal_recovery_endpoint(internal), internal_curve, INTERNAL_DOMAIN),
            (public, public_curve, PUBLIC_DOMAIN)]

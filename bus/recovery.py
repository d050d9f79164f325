"""The recovery service: recent messages and the last value of every topic, from the hub.

It runs in the hub process, on a thread fed by the proxy's capture socket: it sees every
message exactly as the hub forwards it, in order, with no extra hop and no extra subscriber on
the public endpoint. Per topic it keeps the messages of the last `topic_bytes` bytes (the
payloads as sent, so a reply needs no re-encoding) and so the last value. It answers
MessagePack requests on a ROUTER socket (REQ and DEALER clients both work) bound on the public
recovery endpoint (with ``publish.curve``'s keys, as the public XPUB) and on an internal one
(the plant's own keys, as the internal XSUB), where a restarted worker asks what the hub
already has from it. `docs/wire.md` ("Recovery") is the protocol.

Why memory only: history older than a topic's budget is not kept (a subscriber asking for it
gets ``complete: false`` and its `on_error`); the input journal is the plant's record of the
distant past (`docs/journal.md`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Annotated, Any

import msgspec
import zmq
from msgspec import Meta

from streamctl.bus import wire
from streamctl.bus.curve import INTERNAL_DOMAIN, PUBLIC_DOMAIN, CurveClient, CurveServer
from streamctl.bus.sockets import queued

__all__ = ["RecoveryConfig", "RecoveryService", "recovery_endpoint", "internal_recovery_endpoint", "MAX_REPLY",
           "ask", "service_binds"]

log = logging.getLogger("streamctl.recovery")

MAX_REPLY = 10_000
"""Messages in one reply at most; ``more: true`` says ask again from the next seq."""


class RecoveryConfig(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    enabled: bool = True
    endpoint: str | None = None
    """Where subscribers ask; ``null``: the public endpoint's port + 1 (``ipc://P`` -> ``ipc://P.recovery``)."""
    topic_bytes: Annotated[int, Meta(ge=1024, le=1 << 30)] = 4 << 20
    """Per topic, the most recent messages up to this many payload bytes are kept."""


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
    """One topic's recent messages: ``(first seq, last seq, arrival, wall ns, payload)``."""

    __slots__ = ("items", "bytes", "frame")

    def __init__(self, frame: bytes):
        self.items: deque[tuple[int, int, int, int, bytes]] = deque()
        self.bytes = 0
        self.frame = frame

    def add(self, item: tuple[int, int, int, int, bytes], budget: int) -> None:
        if self.items and item[0] != self.items[-1][1] + 1:
            self.items.clear()  # a gap or a new publisher session: what came before no longer joins up
            self.bytes = 0
        self.items.append(item)
        self.bytes += len(item[4])
        while self.bytes > budget and len(self.items) > 1:
            self.bytes -= len(self.items.popleft()[4])


class RecoveryService:
    """The service thread. `start` after the proxy is bound (it connects to `capture`)."""

    def __init__(self, context: zmq.Context, *, capture: str, binds: list[tuple[str, CurveServer | None, str]],
                 topic_bytes: int):
        self._context = context
        self._capture = capture
        self._binds = binds
        self._budget = topic_bytes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._topics: dict[str, _History] = {}
        self._last_seq: dict[str, dict[str, int]] = {}
        """src -> topic -> last seq the hub forwarded."""
        self._arrivals = 0
        self._one = msgspec.msgpack.Decoder(_Seq)
        self._many = msgspec.msgpack.Decoder(list[_Seq])
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode_request = msgspec.msgpack.Decoder(dict[str, Any]).decode
        self.requests = 0
        self.bad_requests = 0

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
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                if capture in ready:
                    self._take(capture)
                for router in routers:
                    if router in ready:
                        self._take(capture)  # answer with everything the hub has forwarded so far
                        self._answer(router)
        finally:
            for sock in sockets:
                sock.close(0)

    def _take(self, capture: zmq.Socket) -> None:
        """Store every captured message queued (subscription notices, one frame, are skipped)."""
        for frames in queued(capture.recv_multipart):
            if len(frames) != 2:
                continue
            frame, payload = frames
            try:
                topic = wire.frame_text(frame)
                batched = wire.parse_topic(topic).kind in wire.BATCHED_KINDS
                if batched:
                    items = self._many.decode(payload)
                    first, last, src = items[0].seq, items[-1].seq, items[0].src
                else:
                    one = self._one.decode(payload)
                    first = last = one.seq
                    src = one.src
            except (ValueError, IndexError, msgspec.DecodeError):
                continue  # the subscribers' problem to count; nothing to keep
            history = self._topics.get(topic)
            if history is None:
                history = self._topics[topic] = _History(frame)
            self._arrivals += 1
            history.add((first, last, self._arrivals, time.time_ns(), payload), self._budget)
            self._last_seq.setdefault(src, {})[topic] = last

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
            prefix = wire.subscription_prefix(str(request["pattern"]))
            return {"ok": True, "messages": [[topic, *h.items[-1][:2], h.items[-1][4]]
                                             for topic, h in sorted(self._topics.items())
                                             if h.items and h.frame.startswith(prefix)]}
        if op == "seqs":
            return {"ok": True, "seqs": dict(self._last_seq.get(str(request["src"]), {}))}
        if op == "history":
            if "topic" in request:
                return self._from_seq(str(request["topic"]), int(request["from_seq"]))
            return self._since(wire.subscription_prefix(str(request["pattern"])), int(request["since_ns"]))
        raise ValueError(f"`op` must be one of history, last, seqs; was {op!r}")

    def _from_seq(self, topic: str, from_seq: int) -> dict[str, Any]:
        history = self._topics.get(topic)
        if history is None or not history.items:
            return {"ok": True, "complete": False, "more": False, "messages": []}
        items = [item for item in history.items if item[1] >= from_seq]
        complete = history.items[0][0] <= from_seq
        more = len(items) > MAX_REPLY
        return {"ok": True, "complete": complete, "more": more,
                "messages": [[topic, first, last, payload] for first, last, _, _, payload in items[:MAX_REPLY]]}

    def _since(self, prefix: bytes, since_ns: int) -> dict[str, Any]:
        found = [(item[2], topic, item) for topic, h in self._topics.items() if h.frame.startswith(prefix)
                 for item in h.items if item[3] >= since_ns]
        found.sort(key=lambda x: x[0])
        more = len(found) > MAX_REPLY
        return {"ok": True, "complete": True, "more": more,
                "messages": [[topic, first, last, payload] for _, topic, (first, last, _, _, payload)
                             in found[:MAX_REPLY]]}


def service_binds(*, internal: str, public: str, internal_curve: CurveServer | None,
                  public_curve: CurveServer | None) -> list[tuple[str, CurveServer | None, str]]:
    """The two endpoints and their keys, as `RecoveryService` takes them."""
    return [(internal_recovery_endpoint(internal), internal_curve, INTERNAL_DOMAIN),
            (public, public_curve, PUBLIC_DOMAIN)]

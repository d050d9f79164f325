"""Many ZeroMQ messages sent in one compiled call, through libzmq's own ``zmq_send``.

A worker at live rates sends a dozen small messages per batch (raw trades per symbol, VWAPs,
indicators). pyzmq's `Socket.send` costs 10-15 us a call here, and sending them one Python call
at a time also wakes ZeroMQ's I/O thread once per message, which then writes each message to
the hub in a system call of its own, and wakes the hub's threads once per message in turn.
Handed over in one tight loop, a batch reaches ZeroMQ within microseconds: its I/O thread wakes
once and writes the batch together.

The compiled loop calls ``zmq_send`` through its address, passed in at run time (numba caches
the machine code, and cached code cannot hold an address of one process), on the socket
pyzmq gives as ``Socket.underlying``. The messages are byte for byte what `Socket.send` sends.
Only the thread that owns the socket may call it, as with any ZeroMQ socket.
"""

from __future__ import annotations

import numba
import numpy as np
import zmq

from streamctl.bus.libzmq import addresses, c_function

__all__ = ["NativeSender", "Outbox", "warm_up"]

_SNDMORE = 2
"""``ZMQ_SNDMORE``."""


_call_send = c_function("int", "ptr", "ptr", "size", "int")
"""``zmq_send(socket, buffer, size, flags)``."""
_call_errno = c_function("int")
"""``zmq_errno()``."""


@numba.njit(cache=True)
def _send_messages(functions, sock, frames, frame_ends, tids, data, ends, count, status):
    """Message ``i < count``: the topic frame ``frames[frame_ends[t-1]:frame_ends[t]]`` of
    ``t = tids[i]``, then the payload ``data[ends[i-1]:ends[i]]``. ``status``: messages sent,
    errno of a failure."""
    status[0] = status[1] = 0
    frames_at, data_at = frames.ctypes.data, data.ctypes.data
    start = 0
    for i in range(count):
        tid = tids[i]
        frame_start = frame_ends[tid - 1] if tid > 0 else 0
        if _call_send(functions[0], sock, frames_at + frame_start, frame_ends[tid] - frame_start, _SNDMORE) < 0:
            status[1] = _call_errno(functions[1])
            return
        if _call_send(functions[0], sock, data_at + start, ends[i] - start, 0) < 0:
            status[1] = _call_errno(functions[1])
            return
        start = ends[i]
        status[0] = i + 1


@numba.njit(cache=True)
def _send_parts(functions, sock, data, part_ends, parts, status):
    """Message ``i``: parts ``2i`` (the topic frame) and ``2i + 1`` (the payload) of `data`, cut at
    `part_ends`, for the first `parts` parts. ``status`` as `_send_messages`'s."""
    status[0] = status[1] = 0
    data_at = data.ctypes.data
    start = 0
    for part in range(parts):
        flags = _SNDMORE if part % 2 == 0 else 0
        if _call_send(functions[0], sock, data_at + start, part_ends[part] - start, flags) < 0:
            status[1] = _call_errno(functions[1])
            return
        start = part_ends[part]
        if flags == 0:
            status[0] = part // 2 + 1


_FUNCTIONS: np.ndarray | None = None


def _functions() -> np.ndarray:
    global _FUNCTIONS
    if _FUNCTIONS is None:
        _FUNCTIONS = addresses("zmq_send", "zmq_errno")
    return _FUNCTIONS


class Outbox:
    """Two-part messages (topic frame, payload) gathered for one `NativeSender.send`: their bytes
    in one reused buffer, each part's end in another. An append is two memoryview copies and two
    stores, no numpy call: right after a wake-up, with cold caches, each numpy call costs
    microseconds, and a worker at live rates sends a few messages per wake-up."""

    __slots__ = ("data", "ends", "size", "parts", "_view")

    def __init__(self) -> None:
        self.data = np.empty(1 << 16, dtype=np.uint8)
        self.ends = np.empty(64, dtype=np.int64)
        self.size = 0
        self.parts = 0
        self._view = self.data.data

    @property
    def count(self) -> int:
        """Messages held."""
        return self.parts // 2

    def reserve(self, nbytes: int, parts: int) -> None:
        """Make room for `parts` more parts of `nbytes` bytes in all (compiled writers fill it)."""
        end = self.size + nbytes
        if end > len(self.data):
            self.data = np.concatenate([self.data[:self.size], np.empty(max(end, 2 * len(self.data)), np.uint8)])
            self._view = self.data.data
        if self.parts + parts > len(self.ends):
            self.ends = np.concatenate([self.ends[:self.parts], np.empty(max(self.parts + parts, 2 * len(self.ends)),
                                                                          np.int64)])

    def add(self, frame: bytes, payload: bytes) -> None:
        end = self.size + len(frame) + len(payload)
        self.reserve(len(frame) + len(payload), 2)
        view, at = self._view, self.size
        view[at:at + len(frame)] = frame
        self.ends[self.parts] = at = at + len(frame)
        view[at:end] = payload
        self.ends[self.parts + 1] = self.size = end
        self.parts += 2

    def clear(self) -> None:
        self.size = self.parts = 0


class NativeSender:
    """Sends batches of two-part messages (topic frame, payload) on `sock` from compiled code."""

    def __init__(self, sock: zmq.Socket):
        self._sock = sock  # held: the address below is valid while the pyzmq socket is open
        self._address = sock.underlying
        self._functions = _functions()
        self._status = np.zeros(2, dtype=np.int64)

    def send_messages(self, frames: np.ndarray, frame_ends: np.ndarray, tids: np.ndarray, data: np.ndarray,
                      ends: np.ndarray) -> None:
        """Send message ``i`` on topic frame ``tids[i]`` (cut from `frames` at `frame_ends`) with
        payload ``data[ends[i-1]:ends[i]]``."""
        status = self._status
        _send_messages(self._functions, self._address, frames, frame_ends, tids, data, ends, len(ends), status)
        self._check(status, len(ends))

    def send(self, outbox: Outbox) -> None:
        """Send what `outbox` holds, and empty it."""
        status = self._status
        count = outbox.count
        _send_parts(self._functions, self._address, outbox.data, outbox.ends, 2 * count, status)
        outbox.clear()
        self._check(status, count)

    def _check(self, status: np.ndarray, count: int) -> None:
        if status[0] != count:  # a PUB never blocks: only a closed socket or context fails here
            raise zmq.ZMQError(int(status[1]), f"send failed after {int(status[0])} of {count} messages: "
                                                f"{zmq.strerror(int(status[1]))}")


def warm_up() -> None:
    """Compile (or load from numba's cache) both loops for the arrays publishers give them, so
    a forked worker does not (the forkserver calls this: `cli/preload`)."""
    functions, status, nothing, no_bytes = np.zeros(2, np.int64), np.zeros(2, np.int64), np.zeros(0, np.int64), \
        np.zeros(0, np.uint8)
    index = np.zeros((2, 3), np.int64)  # a batch's tids and ends are columns of one array
    for tids, ends in ((index[:, 1], index[:, 0]), (nothing, nothing)):
        _send_messages(functions, 0, no_bytes, nothing, tids, no_bytes, ends, 0, status)
    outbox = Outbox()
    _send_parts(functions, 0, outbox.data, outbox.ends, 0, status)

"""Every message queued on a socket taken in one compiled call, through libzmq's own
``zmq_msg_recv``, into one buffer.

pyzmq's `Socket.recv_multipart` costs about 3.6 us a message here (a call, an option read and
a Python object per frame): the recovery service took every message the hub forwards that way,
and it was the largest part of its cost. The compiled loop receives each part into a
``zmq_msg_t``, copies it into a numpy buffer and notes where it ends and whether more parts
follow; Python cuts the messages from one `bytes`. The loop calls libzmq through the addresses
`streamctl.bus.libzmq` gives at run time (cached code cannot hold them). Only the thread that
owns the socket may use a receiver, as with any ZeroMQ socket.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numba
import numpy as np
import zmq
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from streamctl.bus.libzmq import addresses, c_function

__all__ = ["NativeReceiver", "warm_up"]

_DONTWAIT = 1
"""``ZMQ_DONTWAIT``."""
_EAGAIN = zmq.EAGAIN
_INIT, _RECV, _DATA, _MORE, _CLOSE, _ERRNO = range(6)
"""Where each function's address is in the `functions` array."""
_NAMES = ("zmq_msg_init", "zmq_msg_recv", "zmq_msg_data", "zmq_msg_more", "zmq_msg_close", "zmq_errno")
_EMPTY, _FULL, _SLOTS = 0, 1, 2
"""How a drain ended: the queue is empty; the next part does not fit the buffer (it stays in
the message for the next call); every part slot is used."""
_HELD, _HELD_SIZE, _PARTS, _USED, _END, _ERROR = range(6)
"""The `state` array: a part is held in the message (1/0) and its size; parts and bytes taken;
how the drain ended; errno of a failure."""

_I8P = ir.IntType(8).as_pointer()


def _int64s(context, builder, signature, args):
    return [context.cast(builder, value, ty, types.int64) for value, ty in zip(args, signature.args, strict=True)]


_call_int = c_function("int", "ptr")
"""``zmq_msg_init(msg)``, ``zmq_msg_more(msg)``, ``zmq_msg_close(msg)``."""
_call_pointer = c_function("ptr", "ptr")
"""``zmq_msg_data(msg)``, as an address."""
_call_recv = c_function("int", "ptr", "ptr", "int")
"""``zmq_msg_recv(msg, socket, flags)``."""
_call_errno = c_function("int")
"""``zmq_errno()``."""


def _copy_typed(typingctx, destination, source, size):
    """Copy `size` bytes from address `source` to address `destination`."""
    sig = types.void(destination, source, size)

    def codegen(context, builder, signature, args):
        destination_, source_, size_ = _int64s(context, builder, signature, args)
        cgutils.raw_memcpy(builder, builder.inttoptr(destination_, _I8P), builder.inttoptr(source_, _I8P), size_, 1)
        return context.get_dummy_value()

    return sig, codegen


_copy: Any = intrinsic(_copy_typed)


@numba.njit(cache=True)
def _drain(functions, sock, msg, buf, ends, more, state):
    """Receive parts until the queue is empty, `buf` is full or every slot of `ends` is used:
    part ``i`` is ``buf[ends[i-1]:ends[i]]``, ``more[i]`` 1 when another part of its message
    follows. A part that does not fit stays in `msg` (``state[_HELD]``) and is copied first
    next call (the caller makes `buf` big enough for it)."""
    msg_at, buf_at = msg.ctypes.data, buf.ctypes.data
    parts = used = 0
    state[_END] = _EMPTY
    if state[_HELD]:
        size = state[_HELD_SIZE]
        if size > len(buf):
            state[_END] = _FULL
            return
        _copy(buf_at, _call_pointer(functions[_DATA], msg_at), size)
        used = ends[0] = size
        more[0] = _call_int(functions[_MORE], msg_at)
        _call_int(functions[_CLOSE], msg_at)
        parts = 1
        state[_HELD] = 0
    while parts < len(ends):
        _call_int(functions[_INIT], msg_at)
        size = _call_recv(functions[_RECV], msg_at, sock, _DONTWAIT)
        if size < 0:
            error = _call_errno(functions[_ERRNO])
            _call_int(functions[_CLOSE], msg_at)
            if error != _EAGAIN:
                state[_ERROR] = error
            break
        if size > len(buf) - used:
            state[_HELD] = 1
            state[_HELD_SIZE] = size
            state[_END] = _FULL
            break
        _copy(buf_at + used, _call_pointer(functions[_DATA], msg_at), size)
        used += size
        ends[parts] = used
        more[parts] = _call_int(functions[_MORE], msg_at)
        _call_int(functions[_CLOSE], msg_at)
        parts += 1
    else:
        state[_END] = _SLOTS
    state[_PARTS] = parts
    state[_USED] = used


class NativeReceiver:
    """Takes the messages queued on `sock` in batches (of up to `slots` parts and `buffer` bytes
    per compiled call), as `Socket.recv_multipart` gives them one at a time."""

    def __init__(self, sock: zmq.Socket, *, buffer: int = 1 << 20, slots: int = 1 << 14):
        self._sock = sock  # held: the address below is valid while the pyzmq socket is open
        self._address = sock.underlying
        self._functions = addresses(*_NAMES)
        self._msg = np.zeros(8, dtype=np.int64)  # a zmq_msg_t: 64 bytes, aligned
        self._buf = np.zeros(buffer, dtype=np.uint8)
        self._ends = np.zeros(slots, dtype=np.int64)
        self._more = np.zeros(slots, dtype=np.int64)
        self._state = np.zeros(6, dtype=np.int64)
        self._partial: list[bytes] = []
        """The parts of a message a drain ended in the middle of."""

    def messages(self) -> Iterator[list[bytes]]:
        """Every message queued now, each as its list of parts; raises `zmq.ZMQError` when the
        socket fails (closed, context terminated)."""
        state = self._state
        while True:
            _drain(self._functions, self._address, self._msg, self._buf, self._ends, self._more, state)
            if state[_ERROR]:
                error, state[_ERROR] = int(state[_ERROR]), 0
                raise zmq.ZMQError(error, f"receive failed: {zmq.strerror(error)}")
            parts, end = int(state[_PARTS]), int(state[_END])
            data = self._buf[:state[_USED]].tobytes()
            message = self._partial
            start = 0
            for stop, more in zip(self._ends[:parts].tolist(), self._more[:parts].tolist(), strict=True):
                message.append(data[start:stop])
                start = stop
                if not more:
                    yield message
                    message = []
            self._partial = message
            if end == _EMPTY:
                return
            if end == _FULL and state[_HELD_SIZE] > len(self._buf):
                self._buf = np.zeros(max(int(state[_HELD_SIZE]), 2 * len(self._buf)), dtype=np.uint8)


def warm_up() -> None:
    """Compile (or load from numba's cache) the loop for the arrays a receiver gives it."""
    state = np.zeros(6, np.int64)
    _drain(np.zeros(6, np.int64), 0, np.zeros(8, np.int64), np.zeros(0, np.uint8), np.zeros(0, np.int64),
           np.zeros(0, np.int64), state)

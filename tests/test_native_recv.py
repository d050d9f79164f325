"""The compiled receive loop against real ZeroMQ sockets: every queued message, parts intact, in
order, as `recv_multipart` gives them, whatever its batch limits cut."""

from __future__ import annotations

import os
import threading

import pytest
import zmq
from _common import wait_until

from streamctl.bus.native_recv import NativeReceiver


@pytest.fixture
def pair():
    ctx = zmq.Context()
    a, b = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    a.sndhwm = b.rcvhwm = 0
    a.bind("inproc://native-recv")
    b.connect("inproc://native-recv")
    yield a, b
    a.close(0)
    b.close(0)
    ctx.term()


def _messages(count: int) -> list[list[bytes]]:
    """One, two and three parts, empty parts, sizes from 0 to 5,000 bytes, random bytes."""
    out = []
    for i in range(count):
        shape = i % 4
        if shape == 0:
            out.append([f"trade.S{i % 7}".encode() + b"\x00", os.urandom(i % 300)])
        elif shape == 1:
            out.append([os.urandom(1 + i % 5)])
        elif shape == 2:
            out.append([b"a", b"", os.urandom(i % 5000)])
        else:
            out.append([b""])
    return out


@pytest.mark.parametrize(("buffer", "slots"), [(1 << 20, 1 << 14), (64, 3), (1, 1)])
def test_every_message_comes_whole_and_in_order(pair, buffer, slots):
    """Small buffers and few slots cut drains inside messages and hold parts bigger than the
    buffer: the messages still come out exactly as sent."""
    a, b = pair
    sent = _messages(2000)
    receiver = NativeReceiver(b, buffer=buffer, slots=slots)
    got: list[list[bytes]] = []
    for k in range(0, len(sent), 500):  # several takes, some ending inside nothing, some after a pause
        for message in sent[k:k + 500]:
            a.send_multipart(message)
        got += receiver.messages()
    assert got == sent


def test_nothing_queued_gives_nothing_and_later_messages_still_come(pair):
    a, b = pair
    receiver = NativeReceiver(b)
    assert list(receiver.messages()) == []
    a.send_multipart([b"x\x00", b"payload"])
    assert list(receiver.messages()) == [[b"x\x00", b"payload"]]
    assert list(receiver.messages()) == []


def test_a_terminated_context_raises_its_error():
    """As `recv_multipart`: ``ETERM`` once the context is being terminated, not an empty queue."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    receiver = NativeReceiver(sock)
    terminating = threading.Thread(target=ctx.term)
    terminating.start()

    def failed() -> int:
        try:
            list(receiver.messages())
        except zmq.ZMQError as exc:
            return exc.errno
        return 0

    assert wait_until(failed, 30, "the receive failing") == zmq.ETERM
    sock.close(0)
    terminating.join(30)
    assert not terminating.is_alive()

"""What the publisher and the subscriber both do with sockets: read what is queued without
blocking, and close a socket, its monitor and maybe a context."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import zmq

__all__ = ["queued", "stop_monitor", "close_socket"]

_T = TypeVar("_T")


def queued(recv: Callable[[int], _T]) -> Iterator[_T]:
    """What `recv` (a socket's ``recv`` or ``recv_multipart``) returns until nothing is queued."""
    while True:
        try:
            yield recv(zmq.NOBLOCK)
        except zmq.Again:
            return


def stop_monitor(sock: zmq.Socket, monitor: zmq.Socket) -> None:
    """Stop the events of `sock` and close its `monitor` socket."""
    sock.disable_monitor()
    monitor.close(0)


def close_socket(sock: zmq.Socket, monitor: zmq.Socket | None, context: zmq.Context | None) -> None:
    """Close `sock` (after its `monitor`, if any) with the socket's own linger, then terminate
    `context` (None when the caller does not own it). Idempotent."""
    if sock.closed:
        return
    if monitor is not None and not monitor.closed:
        stop_monitor(sock, monitor)
    sock.close()
    if context is not None:
        context.term()

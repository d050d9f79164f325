"""Closing what the publisher and the subscriber both hold: a socket, its monitor, maybe a context."""

from __future__ import annotations

import zmq

__all__ = ["stop_monitor", "close_socket"]


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

"""The listening socket every TCP venue (Databento's gateway, IB's TWS) binds the same way.

A vendor never imports another vendor, so the shared part lives here."""

from __future__ import annotations

import socket

__all__ = ["listen_tcp"]


def listen_tcp(host: str, port: int, *, accept_timeout: float) -> socket.socket:
    """A listening socket on (`host`, `port`; 0 picks a free port), whose `accept` wakes every
    `accept_timeout` s so the accept loop can notice a stop. Closed again if binding fails."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(16)
    except OSError:
        listener.close()
        raise
    listener.settimeout(accept_timeout)
    return listener

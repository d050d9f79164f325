"""Multicast receive sockets: join a group on one interface, read every datagram waiting."""

from __future__ import annotations

import socket
import struct

__all__ = ["join", "drain"]


def join(group: str, port: int, interface: str, recv_buffer: int) -> socket.socket:
    """A non-blocking UDP socket bound to `group`:`port` and member of `group` on `interface`."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, recv_buffer)
        sock.bind((group, port))  # binding the group address keeps other groups on the port out
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(interface))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def drain(sock: socket.socket, out: list[bytes], limit: int) -> None:
    """Append up to `limit` waiting datagrams of `sock` to `out`."""
    for _ in range(limit):
        try:
            out.append(sock.recv(65536))
        except BlockingIOError:
            return

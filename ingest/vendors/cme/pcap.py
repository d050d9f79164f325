"""Read and write packet captures of UDP datagrams (classic pcap and pcapng, Ethernet/IPv4/UDP),
with only the standard library: the venue replays them, tests and demos write synthetic ones."""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Datagram", "read_pcap", "write_pcap"]

_PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": ("<", 1_000), b"\xa1\xb2\xc3\xd4": (">", 1_000),
               b"\x4d\x3c\xb2\xa1": ("<", 1), b"\xa1\xb2\x3c\x4d": (">", 1)}
_PCAPNG = b"\x0a\x0d\x0d\x0a"


@dataclass(frozen=True)
class Datagram:
    ts_ns: int
    """Capture time."""
    group: str
    """Destination address (the multicast group)."""
    port: int
    payload: bytes


def _udp(frame: bytes, ts_ns: int) -> Datagram | None:
    """The UDP datagram in an Ethernet (optionally 802.1Q) frame, or None for anything else."""
    off, ethertype = 14, struct.unpack_from(">H", frame, 12)[0] if len(frame) >= 14 else 0
    if ethertype == 0x8100 and len(frame) >= 18:
        off, ethertype = 18, struct.unpack_from(">H", frame, 16)[0]
    if ethertype != 0x0800 or len(frame) < off + 20 or frame[off + 9] != 17:
        return None
    ihl = (frame[off] & 0x0F) * 4
    if ihl < 20:  # not an IPv4 header
        return None
    dst = str(ipaddress.IPv4Address(frame[off + 16:off + 20]))
    udp = off + ihl
    if len(frame) < udp + 8:
        return None
    port, length = struct.unpack_from(">HH", frame, udp + 2)
    return Datagram(ts_ns, dst, port, frame[udp + 8:udp + max(length, 8)])


def _classic(data: bytes, endian: str, ns_per_tick: int) -> Iterator[Datagram]:
    off = 24
    while off + 16 <= len(data):
        sec, frac, incl, _ = struct.unpack_from(endian + "IIII", data, off)
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        dgram = _udp(frame, sec * 1_000_000_000 + frac * ns_per_tick)
        if dgram:
            yield dgram


_NS = 1_000_000_000


def _pcapng(data: bytes) -> Iterator[Datagram]:
    """Blocks of a pcapng file; a block cut by the end of the file ends it (a capture stopped
    mid-write), a block too short for its own fields is a ValueError."""
    off, endian, per_second = 0, "<", [1_000_000]
    while off + 12 <= len(data):
        btype = struct.unpack_from(endian + "I", data, off)[0]
        if btype == 0x0A0D0D0A:
            endian = "<" if data[off + 8:off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            per_second = []
        blen = struct.unpack_from(endian + "I", data, off + 4)[0]
        if blen < 12 or off + blen > len(data):
            return
        if btype == 1:  # interface description: find if_tsresol (option 9)
            units, opt = 1_000_000, off + 16
            while opt + 4 <= off + blen - 4:
                code, length = struct.unpack_from(endian + "HH", data, opt)
                if code == 0:
                    break
                if code == 9:  # units per second: 10**v, or 2**v with the top bit set
                    v = data[opt + 4]
                    units = 10**v if not v & 0x80 else 1 << (v & 0x7F)
                opt += 4 + (length + 3) // 4 * 4
            per_second.append(units)
        elif btype == 6:  # enhanced packet
            if blen < 32:
                raise ValueError(f"a pcapng packet block of {blen} bytes at byte {off}: too short for its fields")
            iface, hi, lo, incl = struct.unpack_from(endian + "IIII", data, off + 8)
            units = per_second[iface] if iface < len(per_second) else 1_000_000
            dgram = _udp(data[off + 28:off + 28 + min(incl, blen - 32)], ((hi << 32) | lo) * _NS // units)
            if dgram:
                yield dgram
        off += blen


def read_pcap(path: str | Path) -> list[Datagram]:
    """Every UDP datagram of a classic pcap or pcapng file, in capture order."""
    data = Path(path).read_bytes()
    if data[:4] == _PCAPNG:
        return list(_pcapng(data))
    if data[:4] in _PCAP_MAGIC:
        return list(_classic(data, *_PCAP_MAGIC[data[:4]]))
    raise ValueError(f"{path} is neither a pcap nor a pcapng file (magic {data[:4].hex()})")


def _checksum(header: bytes) -> int:
    total = sum(struct.unpack(">10H", header))
    total = (total & 0xFFFF) + (total >> 16)
    return ~((total & 0xFFFF) + (total >> 16)) & 0xFFFF


def write_pcap(path: str | Path, datagrams: Iterable[Datagram], *, source: str = "127.0.0.1") -> None:
    """A classic nanosecond pcap of Ethernet/IPv4/UDP frames (multicast MAC, source port 10000)."""
    out = [struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, 65535, 1)]
    src = ipaddress.IPv4Address(source).packed
    for d in datagrams:
        dst = ipaddress.IPv4Address(d.group).packed
        mac = b"\x01\x00\x5e" + bytes([dst[1] & 0x7F, dst[2], dst[3]])
        udp = struct.pack(">HHHH", 10000, d.port, 8 + len(d.payload), 0) + d.payload
        ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 1, 17, 0, src, dst)
        ip = ip[:10] + struct.pack(">H", _checksum(ip)) + ip[12:]
        frame = mac + b"\x00\x00\x00\x00\x00\x01" + b"\x08\x00" + ip + udp
        sec, ns = divmod(d.ts_ns, 1_000_000_000)
        out.append(struct.pack("<IIII", sec, ns, len(frame), len(frame)) + frame)
    Path(path).write_bytes(b"".join(out))

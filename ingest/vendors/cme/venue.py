"""``streamctl venue cme``: replay MDP 3.0 captures onto their multicast groups on one interface.

Incremental packets go to the groups they were captured on (feed A and B), paced by capture
time at ``speed`` x real time or as fast as possible; the definition packets (54/55/56) loop
on their group; a Market Recovery loop (SnapshotFullRefresh52 and SnapshotFullRefreshOrderBook53,
one of each per instrument, packet MsgSeqNum restarting at 1 each loop) is built from the book state of what has been sent so far.
``--drop-a N`` withholds N consecutive packets from feed A only (from the middle of the
capture), ``--drop-both N`` withholds N from both feeds (from two thirds in), so arbitration
and recovery can be exercised. Destinations in 224.0.32.0/24 are feed B (CME's convention).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
import threading
import time
from typing import Literal

import click
import numpy as np

from streamctl.ingest.vendors.cme.book import ENTRY_SIDES
from streamctl.ingest.vendors.cme.channel import Channel
from streamctl.ingest.vendors.cme.decoder import Decoder
from streamctl.ingest.vendors.cme.encoder import encode_message, encode_packet
from streamctl.ingest.vendors.cme.pcap import Datagram, read_pcap
from streamctl.ingest.vendors.cme.schema import BUNDLED_SCHEMA, Schema, load_schema
from streamctl.ingest.vendors.cme.synthetic import FEEDS, generate
from streamctl.ingest.venue_cli import parse_speed, serve_until_signal

__all__ = ["CmeVenue", "command"]

log = logging.getLogger(__name__)

_FEED_B = ipaddress.IPv4Network("224.0.32.0/24")
_DEFINITIONS = {54, 55, 56}
_ENTRY_TYPE = {sides: entry_type for entry_type, sides in ENTRY_SIDES.items()}
"""(side, implied) -> MDEntryType."""


class CmeVenue:
    """The replay, definition and snapshot loops over one sending socket (threads; `start`/`stop`)."""

    def __init__(self, datagrams: list[Datagram], schema: Schema, *, interface: str = "127.0.0.1",
                 speed: Literal["max"] | float = "max", drop_a: int = 0, drop_both: int = 0,
                 recovery: tuple[tuple[str, int], ...] = (FEEDS["recovery_a"], FEEDS["recovery_b"]),
                 snapshot_interval: float = 0.25, definition_interval: float = 0.5, hold: bool = False,
                 ttl: int = 0):
        self.schema = schema
        decoder = Decoder(schema)
        dec = decoder.decode([d.payload for d in datagrams])
        has_def = np.zeros(len(datagrams), np.bool_)
        has_def[dec.msg_pkt[np.isin(dec.msg_tid, list(_DEFINITIONS))]] = True
        self.definitions = [d for d, is_def in zip(datagrams, has_def.tolist(), strict=True) if is_def]
        self.incrementals = [(d, int(s)) for d, s, is_def in zip(datagrams, dec.seq.tolist(), has_def.tolist(), strict=True)
                             if not is_def]
        """(datagram, MsgSeqNum): malformed ones too, replayed as captured."""
        seqs = sorted({s for (_, s), bad in zip(self.incrementals, dec.bad[~has_def].tolist(), strict=True) if not bad})
        self.dropped_a = set(seqs[len(seqs) // 2:len(seqs) // 2 + drop_a])
        self.dropped_both = set(seqs[2 * len(seqs) // 3:2 * len(seqs) // 3 + drop_both])
        self.sent = 0
        self._decoder = decoder
        self._speed = speed
        self._recovery = recovery
        self._snapshot_interval = snapshot_interval
        self._definition_interval = definition_interval
        self._go = threading.Event()
        if not hold:
            self._go.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._channel = Channel(schema, lambda sid: sid, keep_both=True)
        self._last_seq = 0
        self._applied: set[int] = set()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(interface))
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        self._threads = [threading.Thread(target=t, daemon=True, name=f"cme-venue-{t.__name__}")
                         for t in (self._replay, self._definition_loop, self._snapshot_loop)]
        self.finished = threading.Event()

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def release(self) -> None:
        """Start the incremental replay (when constructed with ``hold``)."""
        self._go.set()

    def stop(self) -> None:
        self._stop.set()
        self._go.set()
        for t in self._threads:
            t.join(timeout=5)
        self._sock.close()

    # ---- loops
    def _replay(self) -> None:
        self._go.wait()
        t0_wall, t0_data = time.monotonic(), None
        for d, seq in self.incrementals:
            if self._stop.is_set():
                return
            if self._speed != "max":
                t0_data = d.ts_ns if t0_data is None else t0_data
                due = t0_wall + (d.ts_ns - t0_data) / 1e9 / self._speed
                if (wait := due - time.monotonic()) > 0 and self._stop.wait(wait):
                    return
            self._track(d.payload, seq)
            if seq in self.dropped_both or (seq in self.dropped_a and ipaddress.IPv4Address(d.group) not in _FEED_B):
                continue
            self._sock.sendto(d.payload, (d.group, d.port))
            self.sent += 1
        self.finished.set()

    def _track(self, payload: bytes, seq: int) -> None:
        """The exchange's own book state (what the snapshot loop reports), from each packet once."""
        dec = self._decoder.decode([payload])
        if seq in self._applied or dec.bad[0]:
            return
        self._applied.add(seq)
        with self._lock:
            self._channel.apply(dec)
            self._channel.take(0)
            self._last_seq = max(self._last_seq, seq)

    def _definition_loop(self) -> None:
        while not self._stop.is_set():
            for d in self.definitions:
                self._sock.sendto(d.payload, (d.group, d.port))
            self._stop.wait(self._definition_interval)

    def _snapshot_loop(self) -> None:
        while not self._stop.wait(self._snapshot_interval):
            packets = self.snapshot_packets()
            for group in self._recovery:
                for p in packets:
                    self._sock.sendto(p, group)

    def snapshot_packets(self) -> list[bytes]:
        """One loop: a SnapshotFullRefresh52 per instrument with a book, MsgSeqNum from 1."""
        with self._lock:
            books = sorted(self._channel.book_sids())
            last = self._last_seq
            packets = []
            now = time.time_ns()
            for n, sid in enumerate(books):
                entries = []
                for (side, implied), levels in self._channel.levels(sid).items():
                    kind = _ENTRY_TYPE[(side, implied)]
                    entries += [{"MDEntryPx": p, "MDEntrySize": s, "NumberOfOrders": 1, "MDPriceLevel": i + 1,
                                 "MDEntryType": kind} for i, (p, s) in enumerate(levels)]
                msg = encode_message(self.schema, 52, {
                    "LastMsgSeqNumProcessed": last, "TotNumReports": len(books), "SecurityID": sid,
                    "RptSeq": self._channel.rpt_seq(sid), "TransactTime": now, "LastUpdateTime": now, "TradeDate": 65535,
                    "MDSecurityTradingStatus": 17}, {"NoMDEntries": entries})
                packets.append(encode_packet(n + 1, now, [msg]))
            packets += self._order_snapshots(last, now)
        return packets

    def _order_snapshots(self, last: int, now: int) -> list[bytes]:
        """A SnapshotFullRefreshOrderBook53 per instrument with a book or orders, one chunk each,
        MsgSeqNum from 1 (CME sends them on a loop of their own; here they share the groups)."""
        by_sid: dict[int, list[dict]] = {sid: [] for sid in self._channel.book_sids()}
        for order_id, sid, side, price, qty in self._channel.resting_orders():
            by_sid.setdefault(sid, []).append({"OrderID": order_id, "MDOrderPriority": order_id, "MDEntryPx": price,
                                               "MDDisplayQty": qty, "MDEntryType": _ENTRY_TYPE[(side, False)]})
        packets = []
        for n, (sid, entries) in enumerate(sorted(by_sid.items())):
            msg = encode_message(self.schema, 53, {
                "LastMsgSeqNumProcessed": last, "TotNumReports": len(by_sid), "SecurityID": sid, "NoChunks": 1,
                "CurrentChunk": 1, "TransactTime": now}, {"NoMDEntries": entries})
            packets.append(encode_packet(n + 1, now, [msg]))
        return packets


def _group(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    return host, int(port)


@click.command("cme")
@click.option("--pcap", "pcaps", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Capture(s) to replay (pcap or pcapng); default: the built-in synthetic channel.")
@click.option("--speed", default="max", show_default=True, help="`max` or a multiple of real time.")
@click.option("--drop-a", type=click.IntRange(min=0), default=0, help="Packets withheld from feed A only.")
@click.option("--drop-both", type=click.IntRange(min=0), default=0, help="Packets withheld from both feeds.")
@click.option("--interface", default="127.0.0.1", show_default=True, help="IPv4 address to send from.")
@click.option("--recovery", "recovery", multiple=True, default=("224.0.31.3:14312", "224.0.32.3:15312"),
              show_default=True, help="GROUP:PORT of the snapshot loop (repeat for A and B).")
@click.option("--schema", default=str(BUNDLED_SCHEMA), show_default=True, type=click.Path(exists=True))
@click.option("--packets", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Packets of the synthetic channel (without --pcap).")
@click.option("--hold", is_flag=True, help="Loop definitions and snapshots, but replay only after SIGUSR1.")
def command(pcaps: tuple[str, ...], speed: str, drop_a: int, drop_both: int, interface: str,
            recovery: tuple[str, ...], schema: str, packets: int, hold: bool) -> None:
    """Replay MDP 3.0 captures onto their multicast groups (feeds A/B, definitions, a snapshot loop)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    pace = parse_speed(speed)
    sbe = load_schema(schema)
    try:
        datagrams = [d for p in pcaps for d in read_pcap(p)] if pcaps else generate(sbe, packets=packets).datagrams
    except ValueError as exc:  # not a capture, or a corrupt one: one line, not a traceback
        raise click.ClickException(str(exc)) from None
    venue = CmeVenue(datagrams, sbe, interface=interface, speed=pace, drop_a=drop_a, drop_both=drop_both,
                     recovery=tuple(_group(r) for r in recovery), hold=hold)
    signal.signal(signal.SIGUSR1, lambda *_: venue.release())
    venue.start()
    print(f"serving {len(venue.incrementals)} incremental and {len(venue.definitions)} definition packets on "
          f"{interface}; dropping {len(venue.dropped_a)} on A and {len(venue.dropped_both)} on both", flush=True)
    serve_until_signal(venue.stop)

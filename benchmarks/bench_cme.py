"""CME MDP 3.0 decoding: our schema-driven decoder against sbedecoder on the same packets.

Run: ``python benchmarks/bench_cme.py [--quick] [--pcap FILE...]``. Input: feed A of the synthetic
channel (``synthetic.generate``; templates 4, 30, 37, 46 with order entries, 47, 48, plus definitions), or the
given captures. Rows, each the best of a few runs on one core, in packets per second:

- ours, decode: every packet framed and every root block and group entry of every template
  gathered into the schema's dtypes (all fields of all messages decoded);
- ours, feed path: decode plus the channel (books at EndOfEvent, RptSeq, trades) into records,
  with books from the MBP levels (``book: mbp``) and from the orders (``book: mbo``): the whole
  input in one call, and in calls of 64 packets (what a poll drains; each call has a fixed cost);
- sbedecoder (the anchor): ``SBEParser.parse`` of every packet with every field value read.

Target: a busy CME channel's peak packet rate. We take 100,000 packets/s on one channel as a
generous peak (an assumption: CME publishes per-channel peaks, which we could not consult here).
"""

from __future__ import annotations

import time

from _table import bench_main

from streamctl.ingest.vendors.cme.channel import Channel
from streamctl.ingest.vendors.cme.decoder import Decoder
from streamctl.ingest.vendors.cme.pcap import read_pcap
from streamctl.ingest.vendors.cme.schema import BUNDLED_SCHEMA, load_schema
from streamctl.ingest.vendors.cme.synthetic import FEEDS, generate

__all__ = ["run"]

TARGET = 100_000
POLL = 64
"""Packets per call in the polled rows (the session applies what one poll drained)."""


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _decode_all(decoder: Decoder, packets: list[bytes]) -> int:
    dec = decoder.decode(packets)
    for tid in set(dec.msg_tid.tolist()):
        if tid in decoder.schema.templates:
            dec.root(tid)
            for g in decoder.schema.template(tid).groups:
                dec.group(tid, g.name)
    return len(dec.msg_tid)


def _feed_path(decoder: Decoder, packets: list[bytes], mbo: bool, batch: int) -> int:
    """Decode and apply `batch` packets at a time (a poll's worth), taking the records after each."""
    channel = Channel(decoder.schema, lambda sid: sid, mbo=mbo)
    records = 0
    for i in range(0, len(packets), batch):
        channel.apply(decoder.decode(packets[i:i + batch]))
        out = channel.take(0)
        records += 0 if out is None else len(out)
    return records


def _sbedecoder(packets: list[bytes]) -> int:
    from sbedecoder import MDPMessageFactory, MDPSchema, SBEParser

    schema = MDPSchema()
    schema.parse(str(BUNDLED_SCHEMA))
    parser = SBEParser(MDPMessageFactory(schema))
    values = 0

    def walk(fields) -> int:
        return sum(1 for f in fields if f.value is not None or True)

    t0 = time.perf_counter()
    for payload in packets:
        for msg in parser.parse(payload, offset=12):
            values += walk(msg.fields)
            for group in msg.groups:
                for entry in group.repeating_groups:
                    values += walk(entry.fields)
    _sbedecoder.seconds = time.perf_counter() - t0  # type: ignore[attr-defined]
    return values


def run(quick: bool = False, pcap: list[str] | None = None) -> list[dict]:
    schema = load_schema()
    if pcap:
        packets = [d.payload for p in pcap for d in read_pcap(p)]
        source = f"{len(pcap)} capture(s)"
    else:
        syn = generate(schema, packets=5_000 if quick else 20_000)
        packets = [d.payload for d in syn.datagrams if (d.group, d.port) == FEEDS["incremental_a"]]
        source = "synthetic channel, feed A"
    decoder = Decoder(schema)
    messages = _decode_all(decoder, packets)  # compiles / loads the kernels
    repeat = 3 if quick else 5
    ours = _best(lambda: _decode_all(decoder, packets), repeat)
    n = len(packets)
    feed = _best(lambda: _feed_path(decoder, packets, False, n), repeat)
    feed_mbo = _best(lambda: _feed_path(decoder, packets, True, n), repeat)
    polled = _best(lambda: _feed_path(decoder, packets, False, POLL), repeat)
    polled_mbo = _best(lambda: _feed_path(decoder, packets, True, POLL), repeat)
    anchor_packets = packets[: 2_000 if quick else 10_000]
    _sbedecoder(anchor_packets)
    theirs = len(anchor_packets) / _sbedecoder.seconds  # type: ignore[attr-defined]
    note = f"{n:,} packets, {messages:,} messages ({source})"
    return [
        {"benchmark": "cme decode, ours", "value": n / ours, "unit": "packets/s",
         "note": f"{messages / ours:,.0f} messages/s; {note}"},
        {"benchmark": "cme decode + channel -> records, ours", "value": n / feed, "unit": "packets/s",
         "note": f"book: mbp; target {TARGET:,} packets/s (a busy channel's peak, assumed)"},
        {"benchmark": "cme decode + channel (MBO) -> records, ours", "value": n / feed_mbo, "unit": "packets/s",
         "note": f"book: mbo (orders of 47 and 46); target {TARGET:,} packets/s"},
        {"benchmark": f"  same, {POLL} packets per call, mbp", "value": n / polled, "unit": "packets/s",
         "note": "a poll's worth at a time: the fixed cost of a call counts"},
        {"benchmark": f"  same, {POLL} packets per call, mbo", "value": n / polled_mbo, "unit": "packets/s",
         "note": "book: mbo"},
        {"benchmark": "cme decode, sbedecoder (anchor)", "value": theirs, "unit": "packets/s",
         "note": f"every field read; {len(anchor_packets):,} of the same packets"},
    ]


def _options(parser) -> None:
    parser.add_argument("--pcap", nargs="*", default=None, help="captures to decode instead of the synthetic channel")


if __name__ == "__main__":
    raise SystemExit(bench_main(run, __doc__, options=_options))

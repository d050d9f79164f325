"""Coverage-guided fuzzing (atheris, libFuzzer) of one parser: `python atheris_target.py NAME [libFuzzer flags]`.

NAME is one of `dbn`, `csv`, `control`, `config` (run in CI by `tests/test_fuzz_atheris.py` for a
bounded number of inputs), or `alpaca`, `ibkr`, `cme`, `pcap` (vendor parsers, run by hand, e.g.
``python atheris_target.py cme -max_total_time=600 CORPUS``). Each target feeds the bytes to the
parser and lets through only the parser's own documented error; anything else is a finding, and
libFuzzer exits non-zero with the input that caused it.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

# Numba kernels are compiled from their bytecode, which instrumentation would rewrite: they are
# left out (their inputs still come from the fuzzer through the instrumented Python around them).
with atheris.instrument_imports(include=["streamctl"], exclude=[
        "streamctl.ingest.formats.dbn.kernels", "streamctl.ingest.vendors.ibkr.kernels",
        "streamctl.ingest.vendors.cme.kernels", "streamctl.ingest.vendors.cme.channel_kernels",
        "streamctl.ingest.validation"]):
    from streamctl.cli.config import ConfigError, parse_config
    from streamctl.ingest.formats.dbn.decoder import DbnDecoder, DbnError
    from streamctl.ingest.formats.tabular import TabularError, iter_tabular
    from streamctl.ingest.validation import refusals
    from streamctl.ingest.vendors.alpaca.parsing import FrameDecoder
    from streamctl.ingest.vendors.cme.channel import Channel
    from streamctl.ingest.vendors.cme.decoder import Decoder
    from streamctl.ingest.vendors.cme.pcap import read_pcap
    from streamctl.ingest.vendors.cme.schema import load_schema
    from streamctl.ingest.vendors.databento import protocol
    from streamctl.ingest.vendors.ibkr.parsing import MarketData, Subscription

_CSV = os.path.join(tempfile.mkdtemp(prefix="stc-fuzz-"), "input.csv")


def dbn(data: bytes) -> None:
    decoder = DbnDecoder()
    try:
        half = len(data) // 2
        decoder.write(data[:half])
        decoder.decode()
        decoder.write(data[half:])
        decoder.finish()
    except DbnError:
        pass


def csv(data: bytes) -> None:
    with open(_CSV, "wb") as fh:
        fh.write(data)
    try:
        for _ in iter_tabular(_CSV, format="csv", chunk_rows=7):
            pass
    except TabularError:
        pass


def control(data: bytes) -> None:
    lines = protocol.LineBuffer()
    try:
        lines.feed(data)
        while (line := lines.next_line()) is not None:
            try:
                protocol.decode_line(line, protocol.SubscriptionRequest)
            except protocol.ControlError:
                pass
    except protocol.ControlError:
        pass


def config(data: bytes) -> None:
    try:
        parse_config(data.decode("utf-8", "replace"), environ={})
    except ConfigError as exc:
        if "\n" in str(exc):
            raise AssertionError(f"a config error must be one line: {exc!r}") from None


_ALPACA = {enc: FrameDecoder(enc, lambda s: 1 if s.isalpha() else 0) for enc in ("msgpack", "json")}


def alpaca(data: bytes) -> None:
    """A frame in either encoding (the first byte picks it); every message is accounted for."""
    if not data:
        return
    out = _ALPACA["json" if data[0] & 1 else "msgpack"].decode(data[1:], 1_700_000_000_000_000_000)
    refusals(out.records)


def ibkr(data: bytes) -> None:
    """A TWS API byte stream: framed by the compiled scan, the rest by the Python path."""
    md = MarketData()
    md.subs.update({1: Subscription(1, "trades"), 2: Subscription(1, "quotes"), 3: Subscription(1, "depth")})

    def other(f: list[bytes]) -> None:
        try:
            if f and f[0] == b"99":
                md.tick_by_tick(f)
            elif f and f[0] in (b"12", b"13"):
                md.depth(f, 1_700_000_000_000_000_000)
        except (ValueError, IndexError):  # the session counts these as malformed
            pass

    md.decode(data, other)
    refusals(md.take(1_700_000_000_000_000_000))


_CME = load_schema()
_CME_DECODER = Decoder(_CME)


def cme(data: bytes) -> None:
    """Packets (cut at a 0xFE 0xFE marker, so the fuzzer can shape several) through one channel."""
    channel = Channel(_CME, lambda sid: sid % 3 + 1, mbo=bool(data[:1]) and data[0] & 1 == 1)
    channel.apply(_CME_DECODER.decode(data[1:].split(b"\xfe\xfe")))
    out = channel.take(1_700_000_000_000_000_000)
    if out is not None:
        refusals(out)


_PCAP = os.path.join(tempfile.mkdtemp(prefix="stc-fuzz-"), "input.pcap")


def pcap(data: bytes) -> None:
    with open(_PCAP, "wb") as fh:
        fh.write(data)
    try:
        for d in read_pcap(_PCAP):
            if type(d.ts_ns) is not int or not 0 <= d.port < 65536:
                raise AssertionError(f"a datagram with time {d.ts_ns!r}, port {d.port!r}")
    except ValueError:
        pass


TARGETS = {"dbn": dbn, "csv": csv, "control": control, "config": config, "alpaca": alpaca, "ibkr": ibkr,
           "cme": cme, "pcap": pcap}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()

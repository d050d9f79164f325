"""Coverage-guided fuzzing (atheris, libFuzzer) of one parser: `python atheris_target.py NAME [libFuzzer flags]`.

NAME is one of `dbn`, `csv`, `control`, `config`. Each target feeds the bytes to the parser and
lets through only the parser's own documented error; anything else is a finding, and libFuzzer
exits non-zero with the input that caused it. `tests/test_fuzz_atheris.py` runs each for a
bounded number of inputs; run it longer by hand with ``-max_total_time=600``.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

# Numba kernels are compiled from their bytecode, which instrumentation would rewrite: they are
# left out (their inputs still come from the fuzzer through the instrumented Python around them).
with atheris.instrument_imports(include=["streamctl"], exclude=["streamctl.ingest.formats.dbn.kernels"]):
    from streamctl.cli.config import ConfigError, parse_config
    from streamctl.ingest.formats.dbn.decoder import DbnDecoder, DbnError
    from streamctl.ingest.formats.tabular import TabularError, iter_tabular
    from streamctl.ingest.vendors.databento import protocol

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


TARGETS = {"dbn": dbn, "csv": csv, "control": control, "config": config}

if __name__ == "__main__":
    target = TARGETS[sys.argv[1]]
    atheris.Setup([sys.argv[0], *sys.argv[2:]], target)
    atheris.Fuzz()

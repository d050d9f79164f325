"""Coverage-guided fuzzing with atheris (libFuzzer) of the DBN decoder, CSV reader, Databento
control protocol and config parser, each in its own process for a bounded number of inputs.

The DBN target starts from the real samples (decompressed), so mutations begin deep in real
structure. A finding makes libFuzzer exit non-zero and print the input; the test shows it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import zstandard
from _data import DATA

pytestmark = pytest.mark.timeout(180)

TARGET = Path(__file__).resolve().parent / "fuzz" / "atheris_target.py"
SEEDS = {
    "dbn": lambda: [zstandard.ZstdDecompressor().decompressobj().decompress(p.read_bytes())
                    if p.name.endswith(".zst") else p.read_bytes()
                    for p in sorted(DATA.rglob("*")) if p.name.endswith((".dbn", ".dbn.zst"))],
    "csv": lambda: [b"ts_event,symbol,price,size,side\n1719878281000000000,ESU4,5528.5,2,B\n",
                    b"ts_event,symbol,bid,ask,bid_size,ask_size\n2024-07-01T23:58:01Z,ESU4,5528.25,5528.5,3,4\n"],
    "control": lambda: [b"schema=trades|stype_in=raw_symbol|symbols=ESU4,NQU4|start=0|is_last=1\n"],
    "config": lambda: [b"name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\ncalculators: {bars: {time: [1s]}}\n"],
}


@pytest.mark.parametrize("target", sorted(SEEDS))
def test_atheris_finds_nothing(tmp_path, target):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i, seed in enumerate(SEEDS[target]()):
        (corpus / f"seed{i}").write_bytes(seed)
    proc = subprocess.run([sys.executable, str(TARGET), target, "-runs=20000", "-max_total_time=40",
                           "-max_len=65536", "-seed=1", str(corpus)],
                          capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Done" in proc.stderr

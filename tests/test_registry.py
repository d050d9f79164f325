"""Symbol registry: dense stable ids, limits, writer restarts, readers in other processes."""

from __future__ import annotations

import multiprocessing as mp

import pytest
from _shmutil import no_leaks, unique_plant

from streamctl.shm.registry import SYMBOL_MAX_BYTES, RegistryError, SymbolRegistry
from streamctl.shm.segments import SegmentError, segment_name


@pytest.fixture
def registry():
    with no_leaks(unique_plant("reg")) as plant:
        reg = SymbolRegistry.create(segment_name(plant, "sym", "feed"), 16, plant=plant)
        try:
            yield reg
        finally:
            reg.close()
            reg.unlink()


def test_ids_are_dense_from_one_and_stable(registry):
    assert [registry.id_for(s) for s in ["AAPL", "MSFT", "AAPL", "ESZ4", "MSFT"]] == [1, 2, 1, 3, 2]
    assert registry.symbols() == {1: "AAPL", 2: "MSFT", 3: "ESZ4"}
    assert registry.symbol(2) == "MSFT"
    assert registry.symbol(0) is None and registry.symbol(4) is None and registry.symbol(-1) is None
    assert registry.lookup("ESZ4") == 3 and registry.lookup("NOPE") is None
    assert len(registry) == 3


@pytest.mark.parametrize(
    ("symbol", "message"),
    [
        ("", r"`symbol` must be a non-empty symbol without leading or trailing spaces, was ''"),
        (" AAPL", r"`symbol` must be a non-empty symbol without leading or trailing spaces"),
        ("X" * (SYMBOL_MAX_BYTES + 1), r"`symbol` must be at most 47 characters, was 'X{48}'"),
        ("é", r"`symbol` must be printable ASCII"),  # topics are ASCII: it could never be published
        ("A\x00B", r"`symbol` must be printable ASCII"),
        ("A\nB", r"`symbol` must be printable ASCII"),
    ],
)
def test_bad_symbols_are_refused(registry, symbol, message):
    with pytest.raises(RegistryError, match=message):
        registry.id_for(symbol)
    assert len(registry) == 0


def test_longest_symbol_round_trip(registry):
    longest = "Z" * SYMBOL_MAX_BYTES
    ids = [registry.id_for(longest), registry.id_for("BRK.B"), registry.id_for("AAPL  241220C00150000")]
    other = SymbolRegistry.attach(registry.name)
    assert other.symbols() == {ids[0]: longest, ids[1]: "BRK.B", ids[2]: "AAPL  241220C00150000"}
    other.close()


def test_full_registry_is_refused_with_its_capacity(registry):
    for i in range(16):
        registry.id_for(f"S{i}")
    with pytest.raises(RegistryError, match=r"is full \(16 symbols\); cannot add `S16`"):
        registry.id_for("S16")
    assert registry.id_for("S3") == 4  # existing symbols still resolve


def test_attach_refuses_a_missing_registry():
    with pytest.raises(SegmentError, match="does not exist"):
        SymbolRegistry.attach("stc_nosuchplant_sym_x")


def _writer(name: str, symbols: list[str], conn) -> None:
    reg = SymbolRegistry.attach(name)
    conn.send([reg.id_for(s) for s in symbols])
    reg.close()


def _run_writer(name: str, symbols: list[str]) -> list[int]:
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_writer, args=(name, symbols, child))
    proc.start()
    try:
        assert parent.poll(60), "writer process did not answer"
        ids = parent.recv()
        proc.join(30)
        assert proc.exitcode == 0
        return ids
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)


def test_ids_survive_a_writer_restart(registry):
    assert _run_writer(registry.name, ["AAPL", "MSFT", "ESZ4"]) == [1, 2, 3]
    # a new feed process (the restart) attaches, reloads, and keeps every id
    assert _run_writer(registry.name, ["ESZ4", "NVDA", "AAPL"]) == [3, 4, 1]
    assert registry.symbols() == {1: "AAPL", 2: "MSFT", 3: "ESZ4", 4: "NVDA"}


def _reader(name: str, conn) -> None:
    reg = SymbolRegistry.attach(name)
    conn.send("attached")
    while True:
        ids = conn.recv()
        if ids is None:
            break
        conn.send([reg.symbol(i) for i in ids])
    reg.close()


def test_reader_in_another_process_resolves_new_symbols(registry):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_reader, args=(registry.name, child))
    proc.start()

    def ask(ids):
        parent.send(ids)
        assert parent.poll(30), "reader process did not answer"
        return parent.recv()

    try:
        assert parent.poll(60) and parent.recv() == "attached"
        assert ask([1]) == [None]  # nothing yet
        registry.id_for("AAPL")
        assert ask([1, 2]) == ["AAPL", None]
        registry.id_for("MSFT")
        registry.id_for("BTC/USD")
        assert ask([3, 2, 1]) == ["BTC/USD", "MSFT", "AAPL"]
        parent.send(None)
        proc.join(30)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(5)

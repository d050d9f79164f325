"""The replay's zstd reader: decompressed on a thread ahead of the reader, yet handing out
exactly the stream, in order, with a cut frame and a corrupt stream reported where they are."""

from __future__ import annotations

import threading

import pytest
import zstandard

from streamctl.ingest.vendors.replay.zstd_frames import ZstdFrames

CHUNK = 1 << 12


def _content(n: int, seed: int) -> bytes:
    """`n` bytes that compress but are not one repeated pattern."""
    return bytes((i * 7919 + seed * 31 + (i >> 9)) & 0xFF for i in range(n))


def _read_all(path, chunk: int = CHUNK) -> tuple[list[bytes], ZstdFrames]:
    with open(path, "rb") as fh:
        reader = ZstdFrames(fh, chunk=chunk)
        try:
            chunks = []
            while data := reader.read(chunk):
                chunks.append(data)
            return chunks, reader
        finally:
            reader.close()


def _threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "zstd-read-ahead"]


def test_hands_out_every_frame_in_order_in_bounded_chunks(tmp_path):
    parts = [_content(50_000, seed) for seed in range(3)]
    path = tmp_path / "three.zst"
    path.write_bytes(b"".join(zstandard.ZstdCompressor(level=1).compress(p) for p in parts))
    chunks, reader = _read_all(path)
    assert b"".join(chunks) == b"".join(parts)
    assert max(map(len, chunks)) <= CHUNK and len(chunks) >= 150_000 // CHUNK
    assert reader.position == path.stat().st_size and not reader.cut_short
    assert reader.read(CHUNK) == b""  # the end stays the end


def test_smaller_reads_than_the_chunk_take_it_apart(tmp_path):
    data = _content(20_000, 1)
    path = tmp_path / "one.zst"
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    with open(path, "rb") as fh:
        reader = ZstdFrames(fh, chunk=CHUNK)
        got = b"".join(iter(lambda: reader.read(1000), b""))
        reader.close()
    assert got == data


def test_a_frame_cut_short_is_reported_at_the_end(tmp_path):
    packed = zstandard.ZstdCompressor().compress(_content(30_000, 2))
    path = tmp_path / "cut.zst"
    path.write_bytes(packed[:-10])
    chunks, reader = _read_all(path)
    assert reader.cut_short
    assert len(b"".join(chunks)) < 30_000


def test_a_corrupt_frame_raises_after_the_frames_before_it(tmp_path):
    good = _content(3 * CHUNK, 3)
    compressor = zstandard.ZstdCompressor(level=1)
    bad = bytearray(compressor.compress(_content(3 * CHUNK, 4)))
    bad[8:40] = b"\xff" * 32  # past the header: the blocks are garbage
    path = tmp_path / "corrupt.zst"
    path.write_bytes(compressor.compress(good) + bytes(bad))
    got = b""
    with open(path, "rb") as fh:
        reader = ZstdFrames(fh, chunk=CHUNK)
        with pytest.raises(zstandard.ZstdError):
            while data := reader.read(CHUNK):
                got += data
        reader.close()
    assert got[: len(good)] == good


def test_close_before_the_end_stops_the_thread(tmp_path):
    path = tmp_path / "long.zst"
    path.write_bytes(zstandard.ZstdCompressor(level=1).compress(_content(100 * CHUNK, 5)))
    before = len(_threads())
    with open(path, "rb") as fh:
        reader = ZstdFrames(fh, chunk=CHUNK)
        assert reader.read(CHUNK)
        reader.close()  # the thread is blocked handing over a chunk: close must still end it
    assert len(_threads()) == before

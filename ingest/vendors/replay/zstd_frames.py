"""A ``.zst`` file read as decompressed chunks, decompressed one chunk ahead on a thread, that
tells input ending inside a frame from a complete one.

zstandard's stream reader bounds each read's output but returns input cut inside a frame as a
clean end; its ``decompressobj`` tells the two apart but has no ``max_length`` (128 KiB of a
looped sample file decompressed to 55 MB in one call). So the stream reader does the reading,
and at its end `frames_end_inside` walks the file's frame and block headers.

Decompression is about 40 % of a replay feed's work on an MBP-1 tape. zstandard releases the
GIL while it decompresses, so a thread decompressing the next chunks while the feed decodes
and routes the current one puts that work on another core when one is free.
"""

from __future__ import annotations

import os
import queue
import threading
from typing import BinaryIO

__all__ = ["ZstdFrames", "frames_end_inside"]

_INPUT_BYTES = 1 << 17
"""Compressed bytes read from the file at a time."""
_AHEAD = 2
"""Decompressed chunks held ready for the reader."""
_END = b""


class ZstdFrames:
    """The decompressed content of the zstd stream in `fh`, `chunk` bytes (at most) per read.

    A daemon thread decompresses up to `_AHEAD` chunks ahead; an error it meets (a corrupt
    stream, an I/O error) is raised by the `read` that reaches it, after every chunk before
    it. ``cut_short`` is known once `read` has returned the end (``b""``); ``position`` is the
    compressed bytes read behind the chunks handed out so far (for progress).
    """

    def __init__(self, fh: BinaryIO, *, chunk: int) -> None:
        import zstandard

        self._fh = fh
        self._chunk = chunk
        self._stream = zstandard.ZstdDecompressor().stream_reader(
            fh, read_size=_INPUT_BYTES, read_across_frames=True, closefd=False)
        self.cut_short = False
        self.position = 0
        self._ready: queue.Queue[tuple[bytes, int, bool] | BaseException] = queue.Queue(_AHEAD)
        self._left = _END
        self._ended = False
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._decompress, name="zstd-read-ahead", daemon=True)
        self._thread.start()

    def read(self, size: int, /) -> bytes:
        """Up to `size` decompressed bytes; b"" at the end."""
        if not self._left and not self._ended:
            item = self._ready.get()
            if isinstance(item, BaseException):
                self._ended = True
                raise item
            self._left, self.position, self.cut_short = item
            self._ended = not self._left
        data, self._left = self._left[:size], self._left[size:]  # the whole chunk is no copy
        return data

    def close(self) -> None:
        """Stop the thread, then release the decompressor (the caller closes `fh`)."""
        self._closing.set()
        while self._thread.is_alive():
            try:  # make room, so a thread waiting to hand over a chunk sees `_closing`
                self._ready.get(timeout=0.01)
            except queue.Empty:
                pass
        self._stream.close()

    def _decompress(self) -> None:
        try:
            while not self._closing.is_set():
                data = self._stream.read(self._chunk)
                cut = not data and frames_end_inside(self._fh)
                if not self._hand_over((data, self._fh.tell(), cut)) or not data:
                    return
        except Exception as exc:  # raised again by the reader's `read`
            self._hand_over(exc)

    def _hand_over(self, item: tuple[bytes, int, bool] | BaseException) -> bool:
        """Queue `item` for the reader; False once `close` was called."""
        while not self._closing.is_set():
            try:
                self._ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


_ZSTD_FRAME = 0xFD2FB528
_SKIPPABLE = range(0x184D2A50, 0x184D2A60)


def frames_end_inside(fh: BinaryIO) -> bool:
    """Whether the zstd frames of `fh` stop inside a frame (RFC 8878 headers; contents skipped).

    Anything that is not a frame is left to the decompressor, which reports it as corrupt.
    """
    end = os.fstat(fh.fileno()).st_size
    back = fh.tell()
    try:
        return _walk(fh, end)
    finally:
        fh.seek(back)


def _walk(fh, end: int) -> bool:
    """`frames_end_inside` from the start of `fh`, whose size is `end`."""
    pos = 0

    def take(n: int) -> bytes | None:
        nonlocal pos
        fh.seek(pos)
        data = fh.read(n)
        pos += n
        return data if len(data) == n else None

    while pos < end:
        magic = take(4)
        if magic is None:
            return True
        kind = int.from_bytes(magic, "little")
        if kind in _SKIPPABLE:
            size = take(4)
            if size is None:
                return True
            pos += int.from_bytes(size, "little")
            continue
        if kind != _ZSTD_FRAME or (desc := take(1)) is None:
            return kind == _ZSTD_FRAME
        flags = desc[0]
        single = flags >> 5 & 1
        pos += (1 - single) + (0, 1, 2, 4)[flags & 3] + (single, 2, 4, 8)[flags >> 6]  # window, dictionary, size
        last = 0
        while not last:
            head = take(3)
            if head is None:
                return True
            value = int.from_bytes(head, "little")
            last = value & 1
            pos += 1 if (value >> 1 & 3) == 1 else value >> 3  # an RLE block holds one byte
        pos += 4 * (flags >> 2 & 1)  # content checksum
    return pos > end

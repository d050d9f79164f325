"""A batch of encoded messages: what a producer hands its `Publisher` in one piece.

A worker's calculators produce hundreds of payloads per batch. Building one msgspec Struct
per payload costs more than computing them, so the calculators write MessagePack straight
into one buffer (compiled, `streamctl.process.calc.encode`) and number the messages
themselves: `Topics` is their topic table (topic -> dense id, and the last ``seq`` of each,
an int64 array the compiled code updates in place). The payload bytes are exactly what
``msgspec.msgpack.encode`` gives for the wire Struct with ``seq`` and ``src`` filled in.

`MessageWriter` collects a batch (compiled writers append through its arrays; rare payloads
are added as Structs with `MessageWriter.add`) and `MessageWriter.finish` returns the
read-only `Messages`. This module imports no numba: every publisher imports it.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import numpy as np

from streamctl.bus import wire

__all__ = ["Topics", "Messages", "MessageWriter"]


class Topics:
    """The topics one producer numbers: text -> dense id, and per id the last ``seq`` sent.

    ``seqs`` may be replaced by a larger array when topics are added: read it afresh after
    `id`.
    """

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.frames: list[bytes] = []
        """Per id, the topic frame (the text and its NUL)."""
        self._ids: dict[str, int] = {}
        self.seqs = np.zeros(64, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.texts)

    def last_seq(self, text: str) -> int:
        """The last ``seq`` numbered on topic `text` (0 for a topic never numbered here)."""
        tid = self._ids.get(text)
        return 0 if tid is None else int(self.seqs[tid])

    def id(self, text: str) -> int:
        """The id of topic `text` (a single-map kind), registering it on first use."""
        tid = self._ids.get(text)
        if tid is not None:
            return tid
        if wire.parse_topic(text).kind in wire.BATCHED_KINDS:
            raise ValueError(f"topic `{text}` carries an array of maps; a message batch holds single maps")
        tid = len(self.texts)
        if tid == len(self.seqs):
            grown = np.zeros(2 * tid, dtype=np.int64)
            grown[:tid] = self.seqs
            self.seqs = grown
        self.texts.append(text)
        self.frames.append(wire.topic_frame(text))
        self._ids[text] = tid
        return tid


class Messages:
    """Encoded messages in order: payload ``i`` is ``data[ends[i-1]:ends[i]]`` on topic
    ``topics.texts[tids[i]]`` with sequence number ``seqs[i]``, published by `src`."""

    __slots__ = ("topics", "src", "data", "ends", "tids", "seqs")

    def __init__(self, topics: Topics, src: str, data: np.ndarray, ends: np.ndarray, tids: np.ndarray,
                 seqs: np.ndarray):
        self.topics = topics
        self.src = src
        self.data = data
        self.ends = ends
        self.tids = tids
        self.seqs = seqs

    def __len__(self) -> int:
        return len(self.ends)

    def __bool__(self) -> bool:
        return len(self.ends) > 0

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        """``(topic, payload bytes)`` per message, in order."""
        texts, data = self.topics.texts, self.data
        start = 0
        for tid, end in zip(self.tids.tolist(), self.ends.tolist(), strict=True):
            yield texts[tid], data[start:end].tobytes()
            start = end

    def decode(self) -> list[tuple[str, msgspec.Struct]]:
        """``(topic, payload Struct)`` per message, decoded as a subscriber would."""
        return [(text, _decoder(text).decode(payload)) for text, payload in self]


_encode = msgspec.msgpack.encode
_DECODERS: dict[str, msgspec.msgpack.Decoder] = {}


def _decoder(text: str) -> msgspec.msgpack.Decoder:
    kind = wire.parse_topic(text).kind
    decoder = _DECODERS.get(kind)
    if decoder is None:
        decoder = _DECODERS[kind] = msgspec.msgpack.Decoder(wire.PAYLOAD_TYPES[kind])
    return decoder


class MessageWriter:
    """Collects one batch of messages of producer `src`, numbered in `topics`.

    Compiled writers take ``data, size, index, count`` (``index`` row ``i``: message ``i``'s
    end, topic id and seq) and return the new ``(size, count)``; call `reserve` first with an
    upper bound of what they add.
    """

    __slots__ = ("topics", "src", "data", "size", "index", "count")

    def __init__(self, topics: Topics, src: str, *, nbytes: int = 4096, messages: int = 64):
        self.topics = topics
        self.src = src
        self.data = np.empty(nbytes, dtype=np.uint8)
        self.size = 0
        self.index = np.empty((messages, 3), dtype=np.int64)
        self.count = 0

    def reserve(self, nbytes: int, messages: int) -> None:
        """Make room for `messages` more messages of `nbytes` bytes in all."""
        if self.size + nbytes > len(self.data):
            grown = np.empty(max(self.size + nbytes, 2 * len(self.data)), dtype=np.uint8)
            grown[:self.size] = self.data[:self.size]
            self.data = grown
        if self.count + messages > len(self.index):
            index = np.empty((max(self.count + messages, 2 * len(self.index)), 3), dtype=np.int64)
            index[:self.count] = self.index[:self.count]
            self.index = index

    def add(self, topic: str, payload: msgspec.Struct) -> None:
        """Number `payload` on `topic`, stamp ``src`` and append it (encoded by msgspec)."""
        topics = self.topics
        tid = topics.id(topic)
        seq = int(topics.seqs[tid]) + 1
        topics.seqs[tid] = seq
        payload.seq = seq  # type: ignore[attr-defined]
        payload.src = self.src  # type: ignore[attr-defined]
        encoded = _encode(payload)
        self.reserve(len(encoded), 1)
        end = self.size + len(encoded)
        self.data.data[self.size:end] = encoded  # through a memoryview: no array is built
        self.size = end
        row = self.index[self.count]
        row[0] = end
        row[1] = tid
        row[2] = seq
        self.count += 1

    def finish(self) -> Messages:
        """The batch written so far (the writer must not be used after)."""
        index = self.index[:self.count]
        return Messages(self.topics, self.src, self.data[:self.size], index[:, 0], index[:, 1], index[:, 2])

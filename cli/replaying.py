"""`streamctl replay`: the exact live pipeline over recorded files, written to a file.

The plant runs for real (feed process, rings, workers, hub) with three differences that
make the output a pure function of the input: the rings block instead of dropping, the
workers close bars by event time only (no wall clock), and the recorder sorts what it
received by (event time, topic, seq) before writing. Only data topics are written
(``status.*`` and ``event.*`` carry wall-clock times). The recorder appends messages to a
spool file as they come and decodes them once the plant has stopped, checking every topic's
sequence (a gap fails the replay: nothing is written); the sort is external (`cli/spill.py`)
and the writers stream, so memory does not grow with the input.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import tempfile
import threading
import time
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec

from streamctl.bus import wire
from streamctl.cli.config import FeedConfig, PlantConfig
from streamctl.cli.plan import owned_partitions
from streamctl.cli.progress import ReplayProgress
from streamctl.cli.runtime import run_dir
from streamctl.cli.spill import SortedSpill

__all__ = ["run_replay", "Recorder", "write_rows", "check_out"]

_DATA_KINDS = {"bar", "trade", "quote", "vwap", "sma", "ema", "anomaly", "book"}


def _order(row: dict[str, Any]) -> tuple[int, str, int]:
    """The output order: event time (a bar's end without one), topic, seq; ties in arrival order."""
    return int(row.get("ts_event", row.get("ts_end", 0))), row["topic"], int(row.get("seq", 0))


_POLL_MS = 10
"""The recorder's longest wait for a message before it looks whether `close` was called."""
_DONE_POLL = 0.01
"""Seconds between the replay's looks at whether the feed finished and the rings drained."""
_PROBE_EVERY = 0.005
"""Seconds between probes while the recorder's subscription propagates (a few ms on ipc)."""

_FRAMES = struct.Struct("<II")
"""A received message in the spool: topic frame length, payload length, then the two frames."""


class Recorder:
    """Subscribes to everything on a background thread and appends the data messages, as
    received, to a spool file; `rows` reads them back decoded, sorted on disk.

    Receiving does no per-row work (a message is a batch of up to thousands of trades or
    quotes), so the recorder keeps up with the plant and nothing queues in ZeroMQ: the backlog
    of a recorder that decoded while receiving was most of the replay's memory (750 MB on a
    4.6 M-record tape). Decoding and sorting happen after the plant stopped.
    """

    def __init__(self, endpoint: str):
        self.endpoint = endpoint
        self._folder = Path(tempfile.mkdtemp(prefix="streamctl-spill-"))
        self._spool = open(self._folder / "received.spool", "wb", buffering=1 << 20)  # noqa: SIM115 - closed in close()
        self.rows = SortedSpill(_order)
        self.bars = 0
        self.lost = 0
        """Messages missing from the recorded sequences (seq gaps), found by `sort`."""
        self._failure: Exception | None = None
        self.synced = threading.Event()
        self.stopped_workers: set[str] = set()
        self._quit = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recorder", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("recorder did not start")

    def _run(self) -> None:
        import zmq

        context = zmq.Context()
        sock = context.socket(zmq.SUB)
        sock.linger = 0
        sock.rcvhwm = 0
        sock.connect(self.endpoint)
        sock.subscribe(b"")
        self._ready.set()
        try:
            self._receive(sock)
        except Exception as exc:  # e.g. the disk is full: `sort` says so instead of a gap count
            self._failure = exc
        finally:
            sock.close()
            context.term()

    def _receive(self, sock: Any) -> None:
        """Until `close`: data messages to the spool, probes and worker stops noted."""
        import zmq

        kinds: dict[bytes, str] = {}
        events = msgspec.msgpack.Decoder(wire.Event)
        while not self._quit.is_set():
            if not sock.poll(_POLL_MS):
                continue
            while True:
                try:
                    frames = sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(frames) != 2:
                    continue
                frame, data = frames
                kind = kinds.get(frame) or kinds.setdefault(frame, _kind(frame))
                if kind in _DATA_KINDS:
                    self._spool.write(_FRAMES.pack(len(frame), len(data)))
                    self._spool.write(frame)
                    self._spool.write(data)
                elif kind == "event":
                    try:
                        event = events.decode(data)
                    except msgspec.DecodeError:
                        continue
                    if event.kind == "probe":
                        self.synced.set()
                    elif event.kind == "stopped":
                        self.stopped_workers.add(event.source)

    def wait_workers(self, names: set[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not names <= self.stopped_workers and time.monotonic() < deadline:
            time.sleep(0.01)
        return names <= self.stopped_workers

    def close(self) -> None:
        self._quit.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if not self._spool.closed:
            self._spool.close()

    def sort(self) -> SortedSpill:
        """Decode every received message into rows and sort them (on disk); the sorted rows."""
        self.close()
        if self._failure is not None:
            raise RuntimeError(f"the recorder failed: {self._failure} (nothing written)") from self._failure
        decoders: dict[bytes, tuple[str, str, msgspec.msgpack.Decoder[Any]]] = {}
        by_kind = {kind: msgspec.msgpack.Decoder(list[cls] if kind in wire.BATCHED_KINDS else cls)  # type: ignore[valid-type]
                   for kind, cls in wire.PAYLOAD_TYPES.items() if kind in _DATA_KINDS}
        add = self.rows.add
        last_seq: dict[tuple[str, str], int] = {}
        with open(self._folder / "received.spool", "rb", buffering=1 << 20) as fh:
            while head := fh.read(_FRAMES.size):
                frame_size, data_size = _FRAMES.unpack(head)
                frame = fh.read(frame_size)
                known = decoders.get(frame)
                if known is None:
                    topic = wire.frame_text(frame)
                    kind = wire.parse_topic(topic).kind
                    known = decoders[frame] = (topic, kind, by_kind[kind])
                topic, kind, decoder = known
                payload: Any = decoder.decode(fh.read(data_size))
                batch: list[Any] = payload if kind in wire.BATCHED_KINDS else [payload]
                if not batch:
                    continue
                key = (topic, batch[0].src)
                expected = last_seq.get(key, 0) + 1
                last_seq[key] = batch[-1].seq
                self.lost += max(batch[0].seq - expected, 0) + (batch[-1].seq - batch[0].seq + 1 - len(batch))
                for item in msgspec.to_builtins(batch):
                    add({"topic": topic, **item})
                if kind == "bar":
                    self.bars += 1
        return self.rows

    def discard(self) -> None:
        """Stop and remove what was recorded (the spool and the run files)."""
        self.close()
        self.rows.close()
        shutil.rmtree(self._folder, ignore_errors=True)


def _kind(frame: bytes) -> str:
    """The kind of a topic frame ("" for one that is not a topic: not recorded)."""
    try:
        return wire.parse_topic(wire.frame_text(frame)).kind
    except ValueError:
        return ""


_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_ROW_GROUP = 1024 * 1024  # pyarrow's most rows per row group by default: the files stay byte for byte the same
_CHUNK = 65_536  # rows turned into Arrow arrays at a time


def check_out(out: str) -> None:
    """Refuse an output the replay could not write, before the replay runs."""
    path = Path(out)
    if path.suffix not in (*_JSON_SUFFIXES, ".parquet"):
        raise ValueError(f"`--out` must end in .jsonl or .parquet; was {out}")
    if path.suffix == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:  # pragma: no cover - depends on the install
            raise ValueError("writing Parquet needs pyarrow: pip install 'streamctl[parquet]'") from None
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"`--out` folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"`--out` folder is not writable: {folder}")
    if path.is_dir():
        raise ValueError(f"`--out` is a folder: {out}")


def write_rows(rows: Iterable[dict[str, Any]], out: str, *, row_group_size: int = _ROW_GROUP) -> None:
    """JSON Lines (``.jsonl``/``.json``) or Parquet (``.parquet``), by the extension.

    Streamed: `rows` is iterated once for JSON Lines and twice for Parquet (a list, or a
    `SortedSpill`). Written to a temporary file beside `out` and renamed over it, so `out` is
    either the whole result or untouched, never a partial file.
    """
    check_out(out)
    path = Path(out)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        if path.suffix == ".parquet":
            _write_parquet(rows, partial, row_group_size)
        else:
            with open(partial, "w") as fh:
                fh.writelines(json.dumps(row) + "\n" for row in rows)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _parquet_schema(rows: Iterable[dict[str, Any]]) -> Any:
    """The schema ``pa.table`` infers from all rows at once, found a chunk at a time.

    Columns in order of first appearance; each column's type is pyarrow's inference on a
    chunk, widened across chunks the way inference widens across values (null < int64 <
    double, element types of lists alike).
    """
    import pyarrow as pa

    types: dict[str, Any] = {}
    it = iter(rows)
    while chunk := list(islice(it, _CHUNK)):
        for row in chunk:
            for name in row:
                types.setdefault(name, pa.null())
        for name, known in types.items():
            found = pa.array([row.get(name) for row in chunk]).type
            if found != known:
                both = [pa.schema([pa.field(name, t)]) for t in (known, found)]
                types[name] = pa.unify_schemas(both, promote_options="permissive").field(name).type
    return pa.schema(list(types.items()))


def _write_parquet(rows: Iterable[dict[str, Any]], path: Path, row_group_size: int) -> None:
    """What ``pq.write_table(pa.table(columns), path)`` wrote, holding one row group at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema(rows)
    it = iter(rows)
    with pq.ParquetWriter(path, schema) as writer:
        written = False
        while True:
            batches, left = [], row_group_size
            while left and (chunk := list(islice(it, min(_CHUNK, left)))):
                arrays = [pa.array([row.get(f.name) for row in chunk], type=f.type) for f in schema]
                batches.append(pa.RecordBatch.from_arrays(arrays, schema=schema))
                left -= len(chunk)
            if batches or not written:
                writer.write_table(pa.Table.from_batches(batches, schema), row_group_size=row_group_size)
                written = True
            if left:
                return


def _raise_on_sigterm() -> Any:
    """Turn the first SIGTERM into an exception, so the plant stops and the run files go; the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def on_term(signum: int, frame: Any) -> None:  # noqa: ARG001
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the cleanup short
        raise RuntimeError("replay stopped by SIGTERM (nothing written)")

    return signal.signal(signal.SIGTERM, on_term)


def run_replay(config: PlantConfig, files: list[str], *, out: str | None, symbols: list[str] | None = None,
               timeout: float | None = None, progress: ReplayProgress | None = None) -> str:
    """Run the plant over `files` with the calculators and partitions of `config`; `progress` is
    told the feed's fraction of input read and its records once a second."""
    from streamctl.cli.supervisor import Supervisor
    from streamctl.ingest.vendors import vendor_spec

    if out:
        check_out(out)
    name = f"replay-{os.getpid()}"
    socket_path = run_dir() / (name + ".out")
    endpoint = f"ipc://{socket_path}"
    options = {"files": [os.path.abspath(f) for f in files], "speed": "max"}
    replay_options: Any = msgspec.convert(options, vendor_spec("replay").options)
    check = replay_options.check()
    if check:
        field, message, value = check
        raise ValueError(f"`{field}` {message}; was {value}")
    feed = FeedConfig(name="replay", vendor="replay", symbols=symbols, options=options)
    cfg = msgspec.structs.replace(
        config,
        name=name,
        feeds=[feed],
        publish=msgspec.structs.replace(config.publish, endpoint=endpoint, sndhwm=0),
        rings=msgspec.structs.replace(config.rings, overflow="block"),
        sinks=[],  # a replay records to its output file, never into the live plant's stores
    )
    sup = Supervisor(cfg, live=False)
    workers = {f"worker-{p}" for p in owned_partitions(cfg)}
    started = time.monotonic()
    # From here a SIGTERM is an exception, so what is made below (the recorder's folder, the
    # segments) goes again whenever it comes; it killed the process outright before the
    # recorder's folder was made and leaked a segment whose pages were being touched.
    previous = _raise_on_sigterm()
    recorder: Recorder | None = None
    try:
        recorder = Recorder(endpoint)

        def sync_recorder() -> None:
            assert recorder is not None
            recorder.start()
            deadline = time.monotonic() + 10
            while not recorder.synced.is_set():
                if time.monotonic() > deadline:
                    raise RuntimeError("recorder could not subscribe to the replay plant within 10 s")
                sup.publish_event("probe", "recorder sync")
                recorder.synced.wait(_PROBE_EVERY)

        try:
            sup.start(before_feeds=sync_recorder)

            def tick() -> None:
                if progress is not None:
                    feeds = [p for p in sup.status()["processes"] if p["role"] == "ingest"]
                    progress.update(feeds[0]["progress"], feeds[0]["records_in"])

            sup.run(stop_when_done=True, duration=timeout, on_tick=tick, period=_DONE_POLL)
            feed_status = [p for p in sup.status()["processes"] if p["role"] == "ingest"]
            if progress is not None:
                progress.update(1.0 if feed_status[0]["state"] == "exited" else feed_status[0]["progress"],
                                feed_status[0]["records_in"])
        finally:
            def finish_recording() -> None:
                assert recorder is not None
                recorder.wait_workers(workers, 30)
                recorder.close()  # before the hub goes, so the recorder never sees a disconnect

            sup.stop(before_hub=finish_recording)
            recorder.close()
            socket_path.unlink(missing_ok=True)
        failed = [p for p in feed_status if p["state"] == "failed"]
        if failed:
            raise RuntimeError(f"replay feed failed: {failed[0]['detail']} (nothing written)")
        rows = recorder.sort()
        if recorder.lost:
            raise RuntimeError(f"the recorder missed {recorder.lost} messages (sequence gaps); nothing written")
        if out:
            write_rows(rows, out)
        records = sum(p["records_in"] for p in feed_status)
        summary = (f"replayed {records} records from {len(files)} file(s) in {time.monotonic() - started:.1f} s: "
                   f"{recorder.rows.rows} messages ({recorder.bars} bars){' -> ' + out if out else ''}")
    finally:
        if progress is not None:
            progress.finish()
        if recorder is not None:
            recorder.discard()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return summary

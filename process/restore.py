"""A restarted worker rebuilds its state from its run's journal before it reads its rings.

It starts from the newest usable checkpoint of its run (`process.checkpoint`), if there is
one, and replays the journal from the position the checkpoint was taken at; otherwise from
the run's first entry. A checkpoint that is cut, corrupt, of another format or config, or whose
position is not an entry boundary of the journal is skipped with a warning for the one before
it (and at last for the whole journal). Every entry is replayed in order through the same steps as live (the same batches, so the same
per-batch outputs; the journaled clocks, so the same bars closed at the same points; the flush).
The publisher numbers every message again but sends only those past the published mark (what
the previous life had handed to ZeroMQ), so each topic's ``seq`` goes on where it was, with
nothing sent twice. Then each ring's read position is moved past what the journal holds: records
journaled but not yet released when the worker died are not read twice. Records are released
only after they are on disk, so none can have been released without being journaled.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from streamctl.process.checkpoint import apply, fingerprint
from streamctl.process.journal.checkpoints import newest_checkpoint
from streamctl.process.journal.files import (
    CLOCK,
    FLUSH,
    LINE,
    RECORDS,
    SYMBOL,
    FileHeader,
    file_name,
    read_entries,
    resumes_at,
    run_files,
)

if TYPE_CHECKING:
    from streamctl.process.worker import Worker

__all__ = ["restore"]

log = logging.getLogger("streamctl.worker")

_HEARTBEAT_EVERY = 256
"""Entries replayed between heartbeats (a long journal must not look like a hung worker)."""


def restore(worker: Worker) -> int:
    """Replay `worker`'s journal for its run; returns the number of entries replayed."""
    journal, mark = worker.journal, worker.mark
    assert journal is not None and mark is not None
    spec, publisher = worker.spec, worker.publisher
    started = time.monotonic()
    files = run_files(Path(spec.journal_dir), spec.run)
    sent_before = mark.value
    forwarded = _forwarded(worker) if files else None
    if forwarded is None:
        publisher.mute_until(sent_before)
    publisher.mute_topics(forwarded)
    ends: list[int | None] = [None] * len(worker.rings)
    first, start, restored_from = 0, LINE, ""
    if files:
        resumed = _from_checkpoint(worker, files)
        if resumed is not None:
            first, start, ends, restored_from = resumed
    entries = records = diverged = 0
    registries = [symbols.registry for symbols in worker.maps]
    for symbols in worker.maps:  # the symbols known then are in the journal; the registry knows today's
        symbols.registry = None
    for i, path in enumerate(files[first:]):
        for entry in read_entries(path, partition=spec.partition, repair=True, start=start if i == 0 else LINE):
            if entry.messages_before != publisher.messages_out:
                diverged += 1
            if entry.kind in (RECORDS, SYMBOL) and entry.ring >= len(worker.rings):
                raise ValueError(f"journal `{path}` names ring {entry.ring}; this worker reads "
                                 f"{len(worker.rings)} (the plant's feeds changed within a run)")
            if entry.kind == RECORDS:
                worker.consume(entry.ring, entry.payload, count=False)
                ends[entry.ring] = entry.position + len(entry.payload)
                records += len(entry.payload)
            elif entry.kind == SYMBOL:
                worker.maps[entry.ring].learn(entry.count, entry.symbol)
            elif entry.kind == CLOCK:
                worker.publisher.publish_messages(worker.calc.on_clock(entry.payload))
            elif entry.kind == FLUSH:
                worker.publisher.publish_messages(worker.calc.flush())
            entries += 1
            if entries % _HEARTBEAT_EVERY == 0:
                worker.slot.heartbeat()
    for symbols, registry in zip(worker.maps, registries, strict=True):
        symbols.registry = registry
    if files:
        with open(files[-1], "rb") as f:
            journal.resume(files[-1], FileHeader.unpack(f.read(64), files[-1]).day)
    worker.journaled_to = list(ends)
    for ring, end in zip(worker.rings, ends, strict=True):
        if end is None:
            continue
        if ring.consumed < end:  # journaled, not yet released when the worker died
            ring.release_to(end)
        elif ring.consumed > end:
            log.error("%s: ring `%s` was read to %d but the journal ends at %d: %d records lost",
                      spec.name, ring, ring.consumed, end, ring.consumed - end)
    unsent = publisher.messages_out - sent_before  # by the mark (the hub's answer, when there is one, decided)
    if diverged:
        log.error("%s: %d journal entries replayed to a different message count than they were written "
                  "with: the restored state may differ", spec.name, diverged)
    if entries or restored_from:
        seconds = time.monotonic() - started
        log.info("%s: restored %sfrom %d journal entries (%d records) in %.2f s; %d messages had been sent, "
                 "%d not sent before the restart sent now", spec.name, restored_from and f"{restored_from} + ",
                 entries, records, seconds, sent_before, max(unsent, 0))
        source = f"{restored_from} + " if restored_from else ""
        worker.restored = f"restored {source}{records} records from the journal in {seconds:.1f} s"
        worker.slot.set("detail", worker.restored)
    publisher.mute_until(0)
    publisher.mute_topics(None)
    return entries


def _from_checkpoint(worker: Worker, files: list[Path]) -> tuple[int, int, list[int | None], str] | None:
    """Load the newest usable checkpoint into `worker`: (index in `files` and byte offset to
    replay from, the rings' journaled ends, its name), or None (replay everything)."""
    spec = worker.spec
    directory = Path(spec.journal_dir)
    wanted = fingerprint(spec)
    rejected: set = set()
    while (found := newest_checkpoint(directory, spec.run, fingerprint=wanted, skip=rejected)) is not None:
        checkpoint, state = found
        rejected.add(checkpoint.path)
        path = directory / file_name(checkpoint.day, spec.run)
        if path not in files or state["journal"]["file"] != path.name or not resumes_at(path, checkpoint.offset):
            log.warning("%s: skipping checkpoint `%s`: the journal has no entry boundary at its position",
                        spec.name, checkpoint.path)
            continue
        try:
            ends = apply(worker, state)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("%s: skipping checkpoint `%s`: %s", spec.name, checkpoint.path, exc)
            continue
        return files.index(path), checkpoint.offset, ends, f"checkpoint {checkpoint.path.name}"
    return None


_ASK_TIMEOUT = 5.0


def _forwarded(worker: Worker) -> dict[str, int] | None:
    """Per topic, the last seq the hub forwarded from this worker (its recovery service's
    answer), or None when there is no service or it did not answer.

    Better than the worker's own mark: a message handed to ZeroMQ just before the SIGKILL may
    never have left the process (the mark counts it: it would be lost), and one sent just before
    the mark was stored would be sent twice. The hub knows what it got.
    """
    spec = worker.spec
    if spec.recovery is None:
        return None
    from streamctl.bus.recovery import ask

    reply = ask(spec.recovery, {"op": "seqs", "src": spec.name}, timeout=_ASK_TIMEOUT, curve=spec.curve)
    if reply is None or not reply.get("ok"):
        log.warning("%s: the hub's recovery service did not answer; the published mark decides what was sent",
                    spec.name)
        return None
    return {str(topic): int(seq) for topic, seq in reply["seqs"].items()}

"""Shared pieces of the IBKR tests: sample files, options, venues, polling a session."""

from __future__ import annotations

from types import SimpleNamespace

import msgspec
import numpy as np
from _common import wait_until
from _databento import ESM4_MBO, ESU4_MBP1, ESU4_TRADES

from streamctl.ingest.vendors.ibkr.options import Options
from streamctl.ingest.vendors.ibkr.venue import IbkrVenue
from streamctl.shm.records import RECORD_DTYPE, Kind

__all__ = ["ESU4_TRADES", "ESU4_MBP1", "ESM4_MBO", "Venues", "options", "feed", "poll_until", "drain", "of_kind"]


class Venues:
    """Starts venues for a test and stops every one of them at teardown."""

    def __init__(self) -> None:
        self.started: list[IbkrVenue] = []

    def start(self, files: list[str], **kwargs) -> IbkrVenue:
        venue = IbkrVenue([str(f) for f in files], **kwargs)
        self.started.append(venue)
        venue.start()
        return venue

    def stop_all(self) -> None:
        for venue in self.started:
            venue.stop()


def options(port: int, **overrides) -> Options:
    raw = {"host": "127.0.0.1", "port": port, "client_id": 5}
    raw.update(overrides)
    return msgspec.convert(raw, Options)


def feed(*symbols: str) -> SimpleNamespace:
    return SimpleNamespace(name="ib", symbols=list(symbols))


def poll_until(session, until, *, timeout: float = 30.0) -> np.ndarray:
    """Poll `session` until ``until(records_so_far)`` holds; fails the test after `timeout` s."""
    batches: list[np.ndarray] = [np.zeros(0, RECORD_DTYPE)]

    def step() -> None:
        batch = session.poll(0.05)
        if batch is not None:
            batches.append(batch.copy())

    wait_until(lambda: until(np.concatenate(batches)), timeout, "records from the session", step=step)
    return np.concatenate(batches)


def drain(session, *, quiet: float = 0.3) -> np.ndarray:
    """What `session` still delivers until a poll of `quiet` s brings nothing (the sender is done)."""
    batches = [np.zeros(0, RECORD_DTYPE)]
    while (batch := session.poll(quiet)) is not None:
        batches.append(batch.copy())
    return np.concatenate(batches)


def of_kind(records: np.ndarray, kind: Kind) -> np.ndarray:
    return records[records["kind"] == kind]

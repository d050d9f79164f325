"""What the local venue serves: recorded files read as the replay reads them, and their contracts.

Any file `streamctl replay` reads (DBN, CSV, Parquet) is read through the replay vendor's own
session, so the venue serves exactly the records the replay would produce, under the files'
own symbols. Each symbol becomes a contract: one that reads as a futures contract (root, CME
month code, year: ``ESU4``) is a ``FUT`` of that root expiring on the month's third Friday (the
CME equity-index rule; the year digit is read in the decade of the file's first event), any
other a ``STK`` on SMART. Contract ids are a CRC-32 of the symbol, the same in every run.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
import zlib
from dataclasses import dataclass, field
from types import SimpleNamespace

import msgspec
import numpy as np

from streamctl.ingest.vendor_api import EndOfInput
from streamctl.ingest.vendors.ibkr.contracts import Contract
from streamctl.ingest.vendors.replay.options import Options as ReplayOptions
from streamctl.ingest.vendors.replay.session import Session as ReplaySession
from streamctl.shm.records import RECORD_DTYPE, Kind

__all__ = ["Tape", "load_tape", "contract_for"]

_FUTURE = re.compile(r"^([A-Z0-9]{1,5}?)([FGHJKMNQUVXZ])(\d{1,2})$")
_MONTHS = "FGHJKMNQUVXZ"


@dataclass
class Tape:
    """The files' records in file order, and per instrument the indices of each kind."""

    records: np.ndarray
    contracts: dict[int, Contract]
    """Tape instrument id -> its contract."""
    index: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)
    """(instrument id, ``trades`` | ``quotes`` | ``book``) -> positions in `records`."""
    pace: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Seconds of data time of each record since the first (running max, gaps capped)."""

    def find(self, con_id: int, symbol: str, sec_type: str, expiry: str, currency: str, local: str) -> list[int]:
        """Tape ids of the contracts a request's fields name (an empty field matches anything)."""
        out = []
        for iid, c in self.contracts.items():
            if con_id:
                if c.con_id == con_id:
                    out.append(iid)
                continue
            if ((local and local != c.local_symbol) or (symbol and symbol != c.symbol)
                    or (sec_type and sec_type != c.sec_type) or (expiry and not c.expiry.startswith(expiry))
                    or (currency and currency != c.currency)):
                continue
            out.append(iid)
        return out


class _Recorder:
    """The FeedContext the replay session reads into: dense ids, problems kept for the summary."""

    feed_name = "venue"

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.problems: list[str] = []

    def instrument_id(self, symbol: str) -> int:
        return self.ids.setdefault(symbol, len(self.ids) + 1)

    def count(self, cause: str, n: int = 1) -> None:
        pass

    def event(self, kind: str, message: str, *, code: int | None = None) -> None:
        self.problems.append(f"{kind}: {message}")

    def progress(self, done: float, total: float) -> None:
        pass

    def heartbeat(self) -> None:
        pass


def contract_for(symbol: str, first_ns: int, *, futures_exchange: str = "CME") -> Contract:
    """The contract the venue lists for `symbol` (see the module docstring)."""
    con_id = zlib.crc32(symbol.encode()) & 0x7FFFFFFF or 1
    m = _FUTURE.match(symbol)
    if m is None:
        return Contract(con_id=con_id, symbol=symbol, sec_type="STK", local_symbol=symbol, exchange="SMART",
                        trading_class=symbol, long_name=symbol)
    root, month, digits = m.groups()
    year_now = dt.datetime.fromtimestamp(first_ns / 1e9, dt.UTC).year
    if len(digits) == 2:
        year = 2000 + int(digits)
    else:
        year = next(y for y in range(year_now - 1, year_now + 9) if y % 10 == int(digits))
    number = _MONTHS.index(month) + 1
    fridays = [d for d in calendar.Calendar().itermonthdates(year, number) if d.month == number and d.weekday() == 4]
    expiry = fridays[2].strftime("%Y%m%d")
    return Contract(con_id=con_id, symbol=root, sec_type="FUT", local_symbol=symbol, expiry=expiry,
                    exchange=futures_exchange, trading_class=root, multiplier="", long_name=f"{root} {expiry[:6]}")


def load_tape(files: list[str], *, futures_exchange: str = "CME", max_gap: float = 5.0) -> Tape:
    """Read `files` whole (as `streamctl replay` reads them). ValueError if they hold no record."""
    options = msgspec.convert({"files": list(files), "speed": "max", "batch": 1 << 20}, ReplayOptions)
    problem = options.check()
    if problem is not None:
        name, message, value = problem
        raise ValueError(f"`{name}` {message}; was {value}")
    ctx = _Recorder()
    session = ReplaySession(options, SimpleNamespace(symbols=None), ctx)
    chunks = []
    session.open()
    try:
        while True:
            batch = session.poll(1.0)
            if batch is not None:
                chunks.append(batch.copy())
    except EndOfInput:
        pass
    finally:
        session.close()
    records = np.concatenate(chunks) if chunks else np.zeros(0, RECORD_DTYPE)
    if not len(records):
        raise ValueError(f"no records in {', '.join(files)}" + (f" ({ctx.problems[0]})" if ctx.problems else ""))
    names = {iid: symbol for symbol, iid in ctx.ids.items()}
    tape = Tape(records=records, contracts={})
    ids = records["instrument_id"]
    kinds = records["kind"]
    for iid in np.unique(ids).tolist():
        mine = ids == iid
        first = int(records["ts_event"][np.flatnonzero(mine)[0]])
        tape.contracts[iid] = contract_for(names[iid], first, futures_exchange=futures_exchange)
        tape.index[(iid, "trades")] = np.flatnonzero(mine & (kinds == Kind.TRADE))
        tape.index[(iid, "quotes")] = np.flatnonzero(mine & (kinds == Kind.QUOTE))
        tape.index[(iid, "book")] = np.flatnonzero(mine & ((kinds == Kind.BOOK) | (kinds == Kind.RESET)))
    ts = np.maximum.accumulate(records["ts_event"].astype(np.int64))
    steps = np.minimum(np.diff(ts, prepend=ts[0]) / 1e9, max_gap)
    tape.pace = np.cumsum(steps)
    return tape

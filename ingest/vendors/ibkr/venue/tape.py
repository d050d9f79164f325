"""What the local venue serves: recorded files read with the replay's decoders, and their contracts.

Any file `streamctl replay` reads (DBN, with MBO driving a level book; CSV; Parquet) is read
whole through the same shared decoders (`streamctl.ingest.formats`), so the venue serves the
records a replay produces, under the files' own symbols. Each symbol becomes a contract: one that reads as a futures contract (root, CME
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

import numpy as np

from streamctl.ingest.formats.dbn.decoder import DbnDecoder, DbnError, metadata_symbols, read_file
from streamctl.ingest.formats.tabular import TabularError, detect_format, iter_tabular
from streamctl.ingest.vendors.ibkr.contracts import Contract
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


def _read(path: str) -> tuple[np.ndarray, dict[int, str]]:
    """Records of one file (vendor ids) and the symbol of each id. ValueError if unreadable."""
    fmt = detect_format(path)
    if fmt == "dbn":
        decoder = DbnDecoder(ts_recv="record")
        try:
            decoder.write(read_file(path))
            batch = decoder.finish()
        except DbnError as exc:
            raise ValueError(f"`{path}`: {exc}") from None
        names = metadata_symbols(decoder.metadata) if decoder.metadata is not None else {}
        names.update(batch.mappings)
        return batch.records, names
    if fmt is None:
        raise ValueError(f"`{path}` has an unknown extension (use .dbn, .dbn.zst, .csv or .parquet)")
    chunks: list[np.ndarray] = []
    symbols: dict[str, int] = {}
    try:
        for chunk in iter_tabular(path, format=fmt):
            ids = np.array([symbols.setdefault(s, len(symbols) + 1) for s in chunk.symbols] or [0], np.uint32)
            chunk.records["instrument_id"] = ids[chunk.records["instrument_id"]]
            chunks.append(chunk.records)
    except (TabularError, OSError) as exc:
        raise ValueError(f"`{path}`: {exc}") from None
    names = {i: s for s, i in symbols.items()}
    return (np.concatenate(chunks) if chunks else np.zeros(0, RECORD_DTYPE)), names


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
    """Read `files` whole (with the decoders `streamctl replay` uses). ValueError if one cannot be
    read or they hold no record."""
    ids: dict[str, int] = {}
    parts = []
    for path in files:
        records, vendor_names = _read(path)
        vendor, at = np.unique(records["instrument_id"], return_inverse=True)
        ours = [ids.setdefault(vendor_names.get(v, str(v)), len(ids) + 1) for v in vendor.tolist()]
        records["instrument_id"] = np.array(ours, np.uint32)[at] if len(records) else 0
        parts.append(records)
    records = np.concatenate(parts) if parts else np.zeros(0, RECORD_DTYPE)
    if not len(records):
        raise ValueError(f"no records in {', '.join(files)}")
    names = {iid: symbol for symbol, iid in ids.items()}
    tape = Tape(records=records, contracts={})
    iids = records["instrument_id"]
    kinds = records["kind"]
    for iid in np.unique(iids).tolist():
        mine = iids == iid
        first = int(records["ts_event"][np.flatnonzero(mine)[0]])
        tape.contracts[iid] = contract_for(names[iid], first, futures_exchange=futures_exchange)
        tape.index[(iid, "trades")] = np.flatnonzero(mine & (kinds == Kind.TRADE))
        tape.index[(iid, "quotes")] = np.flatnonzero(mine & (kinds == Kind.QUOTE))
        tape.index[(iid, "book")] = np.flatnonzero(mine & ((kinds == Kind.BOOK) | (kinds == Kind.RESET)))
    ts = np.maximum.accumulate(records["ts_event"].astype(np.int64))
    steps = np.minimum(np.diff(ts, prepend=ts[0]) / 1e9, max_gap)
    tape.pace = np.cumsum(steps)
    return tape

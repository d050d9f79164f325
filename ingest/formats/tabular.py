"""CSV and Parquet files of trades and quotes to streamctl records (for the replay vendor).

Columns (names case-insensitive; ``docs/replay.md`` is the reference):

- ``ts_event`` (required): int ns since the Unix epoch, or ISO-8601 text (UTC; a trailing
  ``Z`` or ``+00:00`` is accepted), or a Parquet timestamp.
- ``symbol`` (required).
- ``kind``: ``trade`` or ``quote``; when absent, a row with a ``price`` is a trade, else a quote.
- trades: ``price`` (required), ``size`` (default 0), ``side`` (``B``/``buy``/``bid`` -> BID,
  ``A``/``S``/``sell``/``ask`` -> ASK, empty/``N`` -> NONE; the aggressor side).
- quotes: ``bid``, ``ask`` (at least one; an empty one is ``UNDEF_PRICE``), ``bid_size``, ``ask_size``.
- optional ``ts_recv`` (default: ``ts_event``) and ``sequence`` (default 0).

Prices are decimal numbers converted to 1e-9 fixed point (rounded to the nearest unit).
Rows that do not parse are counted as malformed and skipped; the rest of the file is kept.
Parsing is vectorized per column; pyarrow is imported only for Parquet.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from streamctl.shm.records import PRICE_SCALE, RECORD_DTYPE, UNDEF_PRICE, Kind, Side
from streamctl.shm.registry import symbol_problem

__all__ = ["TabularBatch", "TabularError", "iter_tabular", "detect_format", "FORMATS"]

FORMATS = ("dbn", "csv", "parquet")
_INSTALL_HINT = "reading Parquet needs pyarrow: pip install 'streamctl[parquet]'"


class TabularError(ValueError):
    """The file cannot be read at all (missing required column, unreadable file)."""


@dataclass
class TabularBatch:
    """Records of one chunk of rows; ``instrument_id`` indexes `symbols`."""

    records: np.ndarray
    symbols: list[str]
    malformed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    """Malformed rows by first reason (``price``, ``ts_event``, ``kind``...)."""
    rows: int = 0
    """Input rows this chunk covered (malformed ones included)."""
    position: float = 0.0
    """Fraction of the file read after this chunk (0..1), for progress reports."""


def detect_format(path: str) -> Literal["dbn", "csv", "parquet"] | None:
    """The format implied by the file name: ``.dbn``/``.dbn.zst``, ``.csv``, ``.parquet``/``.pq``."""
    name = os.fspath(path).lower()
    if name.endswith((".dbn", ".dbn.zst")):
        return "dbn"
    if name.endswith((".csv", ".csv.gz")):
        return "csv"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    return None


def iter_tabular(path: str, *, format: Literal["csv", "parquet"], chunk_rows: int = 65536) -> Iterator[TabularBatch]:
    """Chunks of records from a CSV or Parquet file, in file order."""
    if format == "csv":
        yield from _iter_csv(path, chunk_rows)
    elif format == "parquet":
        yield from _iter_parquet(path, chunk_rows)
    else:
        raise ValueError(f"`format` must be csv or parquet; was {format}")


def _iter_csv(path: str, chunk_rows: int) -> Iterator[TabularBatch]:
    size = os.path.getsize(path) or 1
    with open(path, "rb") as raw:
        binary = raw
        if os.fspath(path).lower().endswith(".gz"):
            import gzip

            binary = gzip.GzipFile(fileobj=raw)  # type: ignore[assignment]
        # Undecodable bytes become surrogates: such a row fails its symbol or number checks and
        # is counted, instead of ending the file.
        fh = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="")
        reader = _tolerant_rows(csv.reader(fh))
        try:
            header = next(reader)
        except StopIteration:
            return
        if header is None:
            raise TabularError(f"`{os.fspath(path)}` has an unreadable CSV header line")
        names = [h.strip().lower() for h in header]
        _require(names, path)
        width = len(names)
        while True:
            rows = []
            short = 0
            for row in reader:
                if row is not None and len(row) == width:
                    rows.append(row)
                elif row is None or row:  # an unreadable line counts; a blank line is not a row
                    short += 1
                if len(rows) + short >= chunk_rows:
                    break
            if not rows and not short:
                return
            cols = {n: np.array([r[i] for r in rows], dtype=object) for i, n in enumerate(names)} if rows else {}
            batch = _normalize(cols, len(rows)) if rows else _empty()
            if short:
                batch.malformed += short
                batch.reasons["columns"] = batch.reasons.get("columns", 0) + short
            batch.rows = len(rows) + short
            batch.position = min(raw.tell() / size, 1.0)
            yield batch


def _tolerant_rows(reader: Iterator[list[str]]) -> Iterator[list[str] | None]:
    """The reader's rows, with None for a line the csv module refuses (a NUL, an oversized field)."""
    while True:
        try:
            yield next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield None


def _iter_parquet(path: str, chunk_rows: int) -> Iterator[TabularBatch]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise TabularError(_INSTALL_HINT) from None
    try:
        pf = pq.ParquetFile(path)
        names = [n.lower() for n in pf.schema_arrow.names]
    except (pa.ArrowException, OSError) as exc:
        raise TabularError(f"`{os.fspath(path)}` is not a readable Parquet file: {exc}") from None
    _require(names, path)
    try:
        yield from _parquet_batches(pf, names, chunk_rows, max(pf.metadata.num_rows, 1))
    except (pa.ArrowException, OSError) as exc:
        raise TabularError(f"`{os.fspath(path)}` is corrupt: {exc}") from None


def _parquet_batches(pf, names: list[str], chunk_rows: int, total: int) -> Iterator[TabularBatch]:
    done = 0
    for rb in pf.iter_batches(batch_size=chunk_rows):
        cols = {}
        for name, col in zip(names, rb.columns, strict=True):
            arr = col.to_numpy(zero_copy_only=False)
            cols[name] = arr
        batch = _normalize(cols, rb.num_rows)
        batch.rows = rb.num_rows
        done += rb.num_rows
        batch.position = min(done / total, 1.0)
        yield batch


def _require(names: list[str], path: str) -> None:
    for need in ("ts_event", "symbol"):
        if need not in names:
            raise TabularError(f"`{os.fspath(path)}` has no `{need}` column; columns were {', '.join(names)}")
    if not {"price", "bid", "ask"} & set(names):
        raise TabularError(f"`{os.fspath(path)}` needs a `price` (trades) or `bid`/`ask` (quotes) column")


def _empty() -> TabularBatch:
    return TabularBatch(np.zeros(0, RECORD_DTYPE), [])


def _text(col: np.ndarray) -> np.ndarray:
    """Object/str column as stripped str, None/NaN as ''."""
    if col.dtype.kind in "US":
        return np.char.strip(col.astype(str))
    out = np.array(["" if v is None or (isinstance(v, float) and v != v) else str(v).strip() for v in col], dtype=object)
    return out.astype(str) if len(out) else np.zeros(0, "U1")


def _floats(col: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(values, bad) with NaN for empty cells; `bad` marks cells that are not numbers."""
    if col is None:
        return np.full(n, np.nan), np.zeros(n, np.bool_)
    if col.dtype.kind in "iuf":
        return col.astype(np.float64), np.zeros(n, np.bool_)
    text = _text(col)
    text = np.where(text == "", "nan", text)
    try:
        return text.astype(np.float64), np.zeros(n, np.bool_)
    except ValueError:
        vals = np.full(n, np.nan)
        bad = np.zeros(n, np.bool_)
        for i, t in enumerate(text.tolist()):
            try:
                vals[i] = float(t)
            except ValueError:
                bad[i] = True
        return vals, bad


def _ints(col: np.ndarray | None, n: int, default: int = 0) -> tuple[np.ndarray, np.ndarray]:
    if col is None:
        return np.full(n, default, np.int64), np.zeros(n, np.bool_)
    if col.dtype.kind in "iu":
        return col.astype(np.int64), np.zeros(n, np.bool_)
    if col.dtype.kind == "M":
        return col.astype("datetime64[ns]").view(np.int64), np.isnat(col)
    text = _text(col)
    empty = text == ""
    text = np.where(empty, str(default), text)
    try:
        return text.astype(np.int64), np.zeros(n, np.bool_)
    except (ValueError, OverflowError):
        vals = np.full(n, default, np.int64)
        bad = np.zeros(n, np.bool_)
        for i, t in enumerate(text.tolist()):
            try:
                vals[i] = int(t)
            except (ValueError, OverflowError):
                bad[i] = True
        return vals, bad


def _times(col: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray]:
    """ns since the epoch from ints, datetimes or ISO-8601 text; `bad` marks the rest."""
    if col is None:
        return np.zeros(n, np.int64), np.ones(n, np.bool_)
    if col.dtype.kind in "iuM":
        return _ints(col, n)
    if col.dtype.kind == "f":
        bad = ~np.isfinite(col)
        return np.where(bad, 0, np.rint(col)).astype(np.int64), bad
    text = _text(col)
    digits = np.char.isdigit(text)
    vals = np.zeros(n, np.int64)
    bad = np.zeros(n, np.bool_)
    if digits.any():
        vals[digits], _ = _ints(text[digits], int(digits.sum()))
    iso = ~digits
    if iso.any():
        t = np.char.replace(np.char.replace(text[iso], "+00:00", ""), "Z", "")
        try:
            vals[iso] = t.astype("datetime64[ns]").view(np.int64)
            bad[iso] = t == ""
        except ValueError:
            sub = np.zeros(len(t), np.int64)
            sbad = np.zeros(len(t), np.bool_)
            for i, s in enumerate(t.tolist()):
                try:
                    sub[i] = np.datetime64(s, "ns").view(np.int64) if s else 0
                    sbad[i] = not s
                except ValueError:
                    sbad[i] = True
            vals[iso], bad[iso] = sub, sbad
    return vals, bad


_SIDES = {"": Side.NONE, "n": Side.NONE, "none": Side.NONE, "b": Side.BID, "buy": Side.BID, "bid": Side.BID,
          "a": Side.ASK, "s": Side.ASK, "sell": Side.ASK, "ask": Side.ASK}


def _prices(vals: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(vals), np.rint(np.nan_to_num(vals) * PRICE_SCALE), 0).astype(np.int64)


def _normalize(cols: dict[str, np.ndarray], n: int) -> TabularBatch:
    """Columns of one chunk to records; malformed rows are dropped and counted by reason."""
    reasons: dict[str, int] = {}
    bad = np.zeros(n, np.bool_)

    def mark(name: str, mask: np.ndarray) -> None:
        new = mask & ~bad
        k = int(new.sum())
        if k:
            reasons[name] = reasons.get(name, 0) + k
            bad[:] |= mask

    def checked(name: str, parsed: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """The values of a parsed column, its invalid rows marked under its name."""
        values, invalid = parsed
        mark(name, invalid)
        return values

    ts_event = checked("ts_event", _times(cols.get("ts_event"), n))
    ts_recv = checked("ts_recv", _times(cols["ts_recv"], n)) if "ts_recv" in cols else ts_event
    symbols = _text(cols["symbol"])
    mark("symbol", np.array([symbol_problem(s) is not None for s in symbols.tolist()], np.bool_))
    price, size, bid, ask, bid_size, ask_size = (
        checked(name, _floats(cols.get(name), n)) for name in ("price", "size", "bid", "ask", "bid_size", "ask_size")
    )
    sequence, b = _ints(cols.get("sequence"), n)
    mark("sequence", b | (sequence < 0))
    if "kind" in cols:
        kind_text = np.char.lower(_text(cols["kind"]))
        is_trade = kind_text == "trade"
        is_quote = kind_text == "quote"
        mark("kind", ~(is_trade | is_quote))
    else:
        is_trade = np.isfinite(price)
        is_quote = ~is_trade
    mark("price", is_trade & ~np.isfinite(price))
    mark("bid", is_quote & ~np.isfinite(bid) & ~np.isfinite(ask))
    if "side" in cols:
        side_text = np.char.lower(_text(cols["side"]))
        side = np.full(n, 255, np.uint8)
        for text, value in _SIDES.items():
            side[side_text == text] = value
        mark("side", is_trade & (side == 255))
        side[side == 255] = Side.NONE
    else:
        side = np.zeros(n, np.uint8)
    keep = ~bad
    uniq, inverse = np.unique(symbols[keep], return_inverse=True)
    m = int(keep.sum())
    out = np.zeros(m, RECORD_DTYPE)
    t = is_trade[keep]
    out["ts_event"] = ts_event[keep]
    out["ts_recv"] = ts_recv[keep]
    out["instrument_id"] = inverse.astype(np.uint32)
    out["kind"] = np.where(t, Kind.TRADE, Kind.QUOTE)
    out["side"] = np.where(t, side[keep], Side.NONE)
    out["sequence"] = sequence[keep].astype(np.uint64)
    bid_k, ask_k = bid[keep], ask[keep]
    out["price"] = np.where(t, _prices(price[keep]), np.where(np.isfinite(bid_k), _prices(bid_k), UNDEF_PRICE))
    out["price2"] = np.where(t, 0, np.where(np.isfinite(ask_k), _prices(ask_k), UNDEF_PRICE))
    out["size"] = np.nan_to_num(np.where(t, size[keep], bid_size[keep]))
    out["size2"] = np.where(t, 0.0, np.nan_to_num(ask_size[keep]))
    return TabularBatch(out, uniq.tolist(), n - m, reasons)

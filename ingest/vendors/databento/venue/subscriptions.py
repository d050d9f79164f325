"""What a subscription request means to the gateway: which instruments, and the records it answers with.

Kept apart from the socket so the rules (schemas and stypes served, ``ALL_SYMBOLS``, symbols
that do not resolve) read in one place: one SymbolMappingMsg per resolved instrument, an
ErrorMsg naming what did not resolve, and a subscription-ack SystemMsg, as the real gateway.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streamctl.ingest.formats.dbn.constants import SCHEMAS, UNDEF_TIMESTAMP, ErrorCode, SystemCode
from streamctl.ingest.formats.dbn.encoder import encode_error, encode_symbol_mapping, encode_system
from streamctl.ingest.vendors.databento import protocol as lsg
from streamctl.ingest.vendors.databento.venue.files import DatasetData, Frame

__all__ = ["STYPES_SERVED", "Subscriptions"]

STYPES_SERVED = ("raw_symbol", "instrument_id")
"""Symbology types this gateway resolves."""
_ERROR_SYMBOLS_SHOWN = 20


@dataclass
class _Subscription:
    everything_from: int | None = None
    """``ALL_SYMBOLS`` subscribed: every instrument's records from this ``ts_event`` on."""
    ids: dict[int, int] = field(default_factory=dict)
    """Instrument id -> first ``ts_event`` served (0: from the start of the data)."""


class Subscriptions:
    """The subscriptions of one session to one dataset, by schema."""

    def __init__(self, data: DatasetData):
        self._data = data
        self._by_schema: dict[str, _Subscription] = {}

    def wanted(self, frame: Frame) -> bool:
        """Whether `frame` belongs to a subscribed schema and instrument."""
        sub = self._by_schema.get(frame.schema)
        if sub is None:
            return False
        start = sub.ids.get(frame.instrument_id, sub.everything_from)
        return start is not None and frame.ts_event >= start

    def subscribe(self, schema: str, stype_in: str, sub_id: int | None, symbols: list[str], now: int,
                  start: int | None = None) -> list[bytes]:
        """Add one subscription; returns the gateway records that answer it (stamped `now`).

        `start` (intraday replay) serves its instruments' records from that ``ts_event`` on;
        without it, from the start of the data (this gateway's "now" is where its data begins).
        """
        version = self._data.version
        if schema not in SCHEMAS:
            return [encode_error(version=version, ts_event=now, err=f"Invalid schema {schema!r}",
                                 code=ErrorCode.INVALID_SUBSCRIPTION)]
        if stype_in not in STYPES_SERVED:
            text = f"Unsupported stype_in {stype_in!r}; this gateway resolves {', '.join(STYPES_SERVED)}"
            return [encode_error(version=version, ts_event=now, err=text, code=ErrorCode.INVALID_SUBSCRIPTION)]
        sub = self._by_schema.setdefault(schema, _Subscription())
        first = start or 0
        resolved, unknown = self._resolve(sub, stype_in, symbols, first)
        names = self._data.names
        out = []
        for symbol, instrument_id in resolved:
            sub.ids[instrument_id] = min(first, sub.ids.get(instrument_id, first))
            out.append(encode_symbol_mapping(
                version=version, instrument_id=instrument_id, ts_event=now, stype_in=stype_in,
                stype_in_symbol=symbol, stype_out_symbol=names.get(instrument_id, symbol),
                start_ts=UNDEF_TIMESTAMP, end_ts=UNDEF_TIMESTAMP,
            ))
        if unknown:
            shown = ", ".join(unknown[:_ERROR_SYMBOLS_SHOWN])
            if len(unknown) > _ERROR_SYMBOLS_SHOWN:
                shown += f" and {len(unknown) - _ERROR_SYMBOLS_SHOWN} more"
            out.append(encode_error(version=version, ts_event=now, err=f"Failed to resolve symbol(s) for {schema}: {shown}",
                                    code=ErrorCode.SYMBOL_RESOLUTION_FAILED))
        if resolved:
            label = 0 if sub_id is None else sub_id
            out.append(encode_system(version=version, ts_event=now, code=SystemCode.SUBSCRIPTION_ACK,
                                     msg=f"Subscription request {label} for {schema} data succeeded"))
            if start is not None:  # the replay is caught up at once: this gateway's data begins "now"
                out.append(encode_system(version=version, ts_event=now, code=SystemCode.REPLAY_COMPLETED,
                                         msg=f"Finished {schema} replay"))
        return out

    def _resolve(self, sub: _Subscription, stype_in: str, symbols: list[str],
                 first: int) -> tuple[list[tuple[str, int]], list[str]]:
        """(requested symbol, instrument id) of every symbol that resolves, and those that do not."""
        data = self._data
        resolved: list[tuple[str, int]] = []
        unknown: list[str] = []
        for symbol in symbols:
            if symbol == lsg.ALL_SYMBOLS:
                sub.everything_from = min(first, first if sub.everything_from is None else sub.everything_from)
                resolved.extend((data.names.get(i, str(i)), i) for i in data.instruments)
            elif stype_in == "instrument_id":
                if symbol.isdigit() and int(symbol) in data.instruments:
                    resolved.append((symbol, int(symbol)))
                else:
                    unknown.append(symbol)
            elif symbol in data.symbols:
                resolved.extend((symbol, i) for i in sorted(data.symbols[symbol]))
            else:
                unknown.append(symbol)
        return resolved, unknown

"""Contracts: the 12 contract fields of a request, contract details (message 10), the front month.

A request names a contract by the fields conId, symbol, secType, lastTradeDateOrContractMonth,
strike, right, multiplier, exchange, primaryExchange, currency, localSymbol, tradingClass (in
that order). A contract-details reply (server versions 164..178) is::

    10, reqId, symbol, secType, lastTradeDate[ lastTradeTime[ timeZone]], strike, right,
    exchange, currency, localSymbol, marketName, tradingClass, conId, minTick, multiplier,
    orderTypes, validExchanges, priceMagnifier, underConId, longName, primaryExchange,
    contractMonth, industry, category, subcategory, timeZoneId, tradingHours, liquidHours,
    evRule, evMultiplier, secIdCount, (tag, value) * secIdCount, aggGroup, underSymbol,
    underSecType, marketRuleIds, realExpirationDate, stockType, minSize, sizeIncrement,
    suggestedSizeIncrement, ...

(later servers append fields; readers ignore what follows). The front month of a futures root
is the resolved contract with the earliest last trade date: TWS answers only contracts that
still trade, so that is the one that expires next.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Contract", "encode_details", "decode_details", "request_fields", "front_month"]


@dataclass(frozen=True)
class Contract:
    """The part of a contract the plant uses (and the venue serves)."""

    con_id: int
    symbol: str
    """The ticker (stocks) or the root (futures: ``ES``)."""
    sec_type: str
    """``FUT`` or ``STK`` (any IB security type passes through)."""
    local_symbol: str
    """The exchange's own name (``ESU4``): the plant publishes futures under it."""
    expiry: str = ""
    """Last trade date ``YYYYMMDD`` (futures)."""
    exchange: str = "SMART"
    currency: str = "USD"
    trading_class: str = ""
    multiplier: str = ""
    min_tick: float = 0.01
    long_name: str = ""

    @property
    def contract_month(self) -> str:
        return self.expiry[:6]

    @property
    def topic_symbol(self) -> str:
        """The symbol the plant publishes this contract under: the local symbol for futures."""
        return self.local_symbol if self.sec_type == "FUT" and self.local_symbol else self.symbol


def request_fields(c: Contract) -> list[object]:
    """The 12 contract fields of reqTickByTickData / reqMktDepth, naming `c` by its conId."""
    return [c.con_id, c.symbol, c.sec_type, c.expiry, "", "", c.multiplier, c.exchange, "", c.currency,
            c.local_symbol, c.trading_class]


def encode_details(req_id: int, c: Contract) -> list[object]:
    """The fields of one contract-details message (id 10) for server versions 164..178."""
    return [
        10, req_id, c.symbol, c.sec_type, c.expiry, "0", "", c.exchange, c.currency, c.local_symbol,
        c.trading_class or c.symbol, c.trading_class or c.symbol, c.con_id, repr(c.min_tick), c.multiplier,
        "LMT,MKT,STP", c.exchange, 1, 0, c.long_name, "", c.contract_month, "", "", "", "UTC", "", "", "", "",
        0,  # no secIds
        1, "", "", "", c.expiry, "", "1", "1", "1",
    ]


_SYMBOL, _SEC_TYPE, _LAST_TIMES, _EXCHANGE, _CURRENCY, _LOCAL, _CLASS, _CON_ID, _MIN_TICK, _MULT = (
    2, 3, 4, 7, 8, 9, 11, 12, 13, 14)
_LONG_NAME = 19
_FIELDS_MIN = 31  # through secIdCount


def decode_details(fields: list[bytes]) -> tuple[int, Contract]:
    """(reqId, contract) of one contract-details message; ValueError/IndexError if malformed."""
    if len(fields) < _FIELDS_MIN:
        raise ValueError(f"contract details need at least {_FIELDS_MIN} fields, got {len(fields)}")
    text = [f.decode("ascii", "backslashreplace") for f in fields[:_FIELDS_MIN]]
    last = text[_LAST_TIMES].replace("-", " ").split()
    return int(text[1]), Contract(
        con_id=int(text[_CON_ID]),
        symbol=text[_SYMBOL],
        sec_type=text[_SEC_TYPE],
        local_symbol=text[_LOCAL],
        expiry=last[0] if last else "",
        exchange=text[_EXCHANGE],
        currency=text[_CURRENCY],
        trading_class=text[_CLASS],
        multiplier=text[_MULT],
        min_tick=float(text[_MIN_TICK] or 0),
        long_name=text[_LONG_NAME],
    )


def front_month(candidates: list[Contract], expiry: str | None) -> Contract | None:
    """The contract to trade among `candidates` of one root: the one whose last trade date
    starts with `expiry` (``YYYYMM`` or ``YYYYMMDD``) when given, else the earliest to expire."""
    pool = [c for c in candidates if expiry is None or c.expiry.startswith(expiry)]
    return min(pool, key=lambda c: (c.expiry, c.con_id)) if pool else None

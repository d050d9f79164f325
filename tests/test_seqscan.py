"""The compiled ``seq``/``src`` scan agrees with msgspec's decode on every payload: what it finds
where msgspec decodes, and a refusal where msgspec refuses (issue 13: the recovery service's cost)."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamctl.bus import wire
from streamctl.bus.seqscan import find


class _Seq(msgspec.Struct):
    seq: int = 0
    src: str = ""


_ONE = msgspec.msgpack.Decoder(_Seq)
_MANY = msgspec.msgpack.Decoder(list[_Seq])

_integers = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
_scalars = (st.none() | st.booleans() | st.integers(min_value=-(1 << 63), max_value=(1 << 64) - 1)
            | st.floats(allow_nan=False) | st.text(max_size=40) | st.binary(max_size=300))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4)
                       | st.dictionaries(st.text(max_size=5), inner, max_size=4), max_leaves=12)
_keys = st.sampled_from(["seq", "src", "ts_recv", "symbol", "se", "seqq", "sr"]) | st.text(max_size=6)
_maps = st.dictionaries(_keys, _values | _integers, max_size=8)


def _decoded(payload: bytes, batched: bool) -> tuple[int, int, str] | None:
    try:
        if batched:
            items = _MANY.decode(payload)
            return items[0].seq, items[-1].seq, items[0].src
        one = _ONE.decode(payload)
        return one.seq, one.seq, one.src
    except (msgspec.DecodeError, IndexError):
        return None


def _expected(payload: bytes, batched: bool) -> tuple[int, int, str] | None:
    """msgspec's answer, but for a seq past int64 (refused: see the next-to-last test)."""
    found = _decoded(payload, batched)
    return None if found is not None and max(found[:2]) > (1 << 63) - 1 else found


def _scanned(payloads: list[bytes], batched: list[bool]) -> list[tuple[int, int, str] | None]:
    found = find(payloads, batched)
    out: list[tuple[int, int, str] | None] = []
    for i in range(len(payloads)):
        if not found.ok[i]:
            out.append(None)
            continue
        try:
            out.append((found.first[i], found.last[i], found.joined[found.src_start[i]:found.src_end[i]].decode()))
        except UnicodeDecodeError:  # the service refuses a `src` that is not UTF-8, as msgspec does
            out.append(None)
    return out


@settings(max_examples=300, deadline=None)
@given(messages=st.lists(st.tuples(st.booleans() | st.just(True), st.lists(_maps, max_size=5) | _maps | _values,
                                   st.integers(min_value=0, max_value=3)), min_size=1, max_size=8))
def test_the_scan_finds_what_msgspec_decodes_and_refuses_what_it_refuses(messages):
    """Arrays of maps, maps and other values, some cut short or with a byte appended, in one call."""
    payloads, batched = [], []
    for is_batched, obj, damage in messages:
        payload = msgspec.msgpack.encode(obj)
        if damage == 1 and len(payload) > 1:
            payload = payload[:len(payload) // 2]
        elif damage == 2:
            payload += b"\x01"
        payloads.append(payload)
        batched.append(is_batched)
    assert _scanned(payloads, batched) == [_expected(p, b) for p, b in zip(payloads, batched, strict=True)]


def test_the_plant_s_own_payloads():
    trades = [wire.Trade(seq=seq, src="worker-1", symbol="ESZ4", ts_event=seq, ts_recv=seq, price=5000.25, size=2.0,
                         side="B") for seq in range(41, 69)]
    bar = wire.Bar(seq=9, src="worker-0", symbol="ESZ4", interval="1s", ts_start=0, ts_end=1, open=1.0, high=2.0,
                   low=0.5, close=1.5, volume=3.0, trades=2, vwap=1.2, ts_event=1, ts_recv=1)
    encode = msgspec.msgpack.encode
    assert _scanned([encode(trades), encode(bar), encode(trades[:1])], [True, False, True]) == [
        (41, 68, "worker-1"), (9, 9, "worker-0"), (41, 41, "worker-1")]


@pytest.mark.parametrize("payload, batched", [
    (b"\x90", True),                      # an empty array: no first element
    (b"\x81\xa3seq\xc1", False),          # 0xc1 is never MessagePack
    (b"\x81\x01\x01", False),             # a key that is not a string
    (b"\x81\xa3src\xa1\xff", False),      # src not UTF-8
    (b"\x81\xa3seq\xcb" + bytes(8), False),  # seq a float
    (b"\x91\x81\xa3seq\x01\x00", True),   # trailing bytes
])
def test_what_msgspec_refuses_is_refused(payload, batched):
    assert _expected(payload, batched) is None
    assert _scanned([payload], [batched]) == [None]


def test_a_seq_past_int64_is_refused_where_msgspec_takes_it():
    """The one difference (the output journal stores a seq as int64): the message is not kept.
    A wide integer elsewhere in a payload is skipped as msgspec skips it."""
    payload = b"\x81\xa3seq\xcf\x80" + bytes(7)
    assert _decoded(payload, False) == (1 << 63, 1 << 63, "")
    assert _scanned([payload], [False]) == [None]
    wide = msgspec.msgpack.encode({"seq": 3, "size": (1 << 64) - 1})
    assert _scanned([wide], [False]) == [_decoded(wide, False)] == [(3, 3, "")]


def test_negative_and_wide_integers_and_repeated_keys():
    payloads = [b"\x82\xa3seq\x01\xa3seq\xd3" + (-5).to_bytes(8, "big", signed=True),  # the last key wins
                b"\x81\xa3seq\xcf" + ((1 << 63) - 1).to_bytes(8, "big"),
                b"\x81\xa3seq\xd0\x80"]
    assert _scanned(payloads, [False] * 3) == [_expected(p, False) for p in payloads] == [
        (-5, -5, ""), ((1 << 63) - 1, (1 << 63) - 1, ""), (-128, -128, "")]

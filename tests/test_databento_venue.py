"""The local Databento gateway, proven faithful with Databento's own client and decoder."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from _common import wait_until
from _data import sample
from _databento import (
    ESH1_MBO_V3,
    ESH1_MBP1_V3,
    ESH1_TRADES_V2,
    ESH1_TRADES_V3,
    ESU4_MBP1,
    ESU4_TRADES,
    KEY,
    LIVE_V3,
    NVDA_TRADES_V3,
    collect,
    open_session,
)

from streamctl.ingest.formats.dbn.constants import ErrorCode, SystemCode
from streamctl.ingest.formats.dbn.decoder import DbnError, read_file
from streamctl.ingest.formats.dbn.encoder import (
    encode_error,
    encode_metadata,
    encode_symbol_mapping,
    encode_system,
)
from streamctl.ingest.vendor_api import SessionError
from streamctl.ingest.vendors.databento import protocol as lsg
from streamctl.ingest.vendors.databento.venue import DatabentoVenue, load_venue_file

db = pytest.importorskip("databento")
dbn = pytest.importorskip("databento_dbn")

TS = 1_700_000_000_000_000_000


def started(port: int, dataset: str, subs: list[tuple[str, object]], *, key: str = KEY, **live_kwargs):
    """Databento's `Live` client subscribed and started against our venue; (client, records so far)."""
    client = db.Live(key=key, gateway="127.0.0.1", port=port, **live_kwargs)
    for schema, symbols in subs:
        client.subscribe(dataset=dataset, schema=schema, symbols=symbols)
    got: list = []
    client.add_callback(got.append)
    client.start()
    return client, got


def official(port: int, dataset: str, subs: list[tuple[str, object]], *, key: str = KEY, timeout: float = 20.0,
             **live_kwargs):
    """Run Databento's `Live` client against our venue until the venue closes the session."""
    client, got = started(port, dataset, subs, key=key, **live_kwargs)
    client.block_for_close(timeout=timeout)
    return client, got


def file_records(path: str) -> list:
    return list(db.DBNStore.from_file(path))


def data_only(records: list) -> list:
    return [r for r in records if not isinstance(r, dbn.SymbolMappingMsg | dbn.SystemMsg | dbn.ErrorMsg)]


# ---------------------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize("version", [1, 2, 3])
def test_encoders_match_databento_dbn(version):
    meta = dbn.Metadata(dataset="GLBX.MDP3", start=TS, stype_in=None, stype_out=dbn.SType.INSTRUMENT_ID,
                        schema=None, symbols=[], version=version)
    assert encode_metadata(version=version, dataset="GLBX.MDP3", start=TS) == meta.encode()
    kw = dict(instrument_id=42, ts_event=TS, stype_in_symbol="ESZ3", stype_out_symbol="ESZ3", start_ts=TS,
              end_ts=TS + 5)
    if version == 1:
        mapping = dbn.SymbolMappingMsgV1(publisher_id=0, **kw)
        system = dbn.SystemMsgV1(ts_event=TS, msg="Heartbeat")
        error = dbn.ErrorMsgV1(ts_event=TS, err="Unknown symbol")
    else:
        mapping = dbn.SymbolMappingMsg(publisher_id=0, stype_in=dbn.SType.RAW_SYMBOL,
                                       stype_out=dbn.SType.INSTRUMENT_ID, **kw)
        system = dbn.SystemMsg(ts_event=TS, msg="Heartbeat", code=dbn.SystemCode.HEARTBEAT)
        error = dbn.ErrorMsg(ts_event=TS, err="Unknown symbol", code=dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED)
    assert encode_symbol_mapping(version=version, **kw) == bytes(mapping)
    assert encode_system(version=version, ts_event=TS, msg="Heartbeat") == bytes(system)
    assert encode_error(version=version, ts_event=TS, err="Unknown symbol",
                        code=ErrorCode.SYMBOL_RESOLUTION_FAILED) == bytes(error)


def test_encoders_refuse_bad_input():
    with pytest.raises(ValueError, match="`version` must be 1, 2 or 3, was 4"):
        encode_system(version=4, ts_event=TS, msg="x")
    with pytest.raises(ValueError, match="`stype_in_symbol` must be shorter than 22"):
        encode_symbol_mapping(version=1, instrument_id=1, ts_event=TS, stype_in_symbol="X" * 30,
                              stype_out_symbol="X", start_ts=0, end_ts=0)
    with pytest.raises(ValueError, match="`schema` must be one of"):
        encode_metadata(version=3, dataset="GLBX.MDP3", start=TS, schema="nope")
    long = encode_system(version=3, ts_event=TS, msg="y" * 500, code=SystemCode.SUBSCRIPTION_ACK)
    assert len(long) == 320  # long texts are truncated, never overflow the record


# ---------------------------------------------------------------------------------------------- control lines


def test_our_gateway_lines_parse_with_the_official_client():
    from databento.live.gateway import (
        AuthenticationResponse,
        ChallengeRequest,
        Greeting,
        parse_gateway_message,
    )

    cases = [
        (lsg.Greeting(lsg_version=lsg.LSG_VERSION), Greeting),
        (lsg.Challenge(cram="abcDEF"), ChallengeRequest),
        (lsg.AuthResponse(success="1", session_id="7"), AuthenticationResponse),
        (lsg.AuthResponse(success="0", error="Authentication failed."), AuthenticationResponse),
    ]
    for ours, theirs in cases:
        parsed = parse_gateway_message(lsg.encode_line(ours).decode())
        assert type(parsed) is theirs
        assert {k: str(v) for k, v in vars(parsed).items() if v is not None} == {
            k: str(getattr(ours, k)) for k in ours.__struct_fields__ if getattr(ours, k) is not None
        }


def test_official_client_lines_parse_with_ours():
    from databento.live.gateway import AuthenticationRequest, SessionStart, SubscriptionRequest

    auth = AuthenticationRequest(auth="f" * 64 + "-ABCDE", dataset="GLBX.MDP3", heartbeat_interval_s=30)
    ours = lsg.decode_line(bytes(auth), lsg.AuthRequest)
    assert (ours.dataset, ours.encoding, ours.compression, ours.heartbeat_interval_s) == ("GLBX.MDP3", "dbn", "none", 30)
    sub = SubscriptionRequest(schema=dbn.Schema.TRADES, stype_in=dbn.SType.RAW_SYMBOL, symbols="ESU4,NQU4", id=3)
    parsed = lsg.decode_line(bytes(sub), lsg.SubscriptionRequest)
    assert (parsed.schema, parsed.stype_in, parsed.symbols, parsed.id, parsed.is_last) == (
        "trades", "raw_symbol", "ESU4,NQU4", 3, 1)
    assert lsg.decode_line(bytes(SessionStart()), lsg.SessionStart).start_session == "0"


@pytest.mark.parametrize(
    ("line", "kind", "match"),
    [
        (b"success=1|surprise=1\n", lsg.AuthResponse, "unknown field `surprise`"),
        (b"lsg_version=1", lsg.Greeting, "must end with a newline"),
        (b"schema=trades|stype_in=raw_symbol|symbols=A|id=x\n", lsg.SubscriptionRequest, r"\$\.id"),
        (b"cram\n", lsg.Challenge, "has no '='"),
    ],
)
def test_control_lines_are_parsed_strictly(line, kind, match):
    with pytest.raises(lsg.ControlError, match=match):
        lsg.decode_line(line, kind)


def test_subscription_lines_batch_500_symbols():
    symbols = [f"S{i}" for i in range(1201)]
    lines = lsg.subscription_requests("trades", symbols, sub_id=2)
    assert [len(x.symbols.split(",")) for x in lines] == [500, 500, 201]
    assert [x.is_last for x in lines] == [0, 0, 1]
    with pytest.raises(lsg.ControlError, match="`symbols` must not be empty"):
        lsg.subscription_requests("trades", [])


def test_cram_matches_the_official_client():
    from databento.common.cram import get_challenge_response

    assert lsg.cram_response("challenge", KEY) == get_challenge_response("challenge", KEY)
    auth = lsg.cram_response("abc", KEY)
    assert lsg.check_cram("abc", auth, KEY) is None
    assert lsg.check_cram("abd", auth, KEY) == "Authentication failed."
    assert lsg.check_cram("abc", auth, "db-" + "B" * 27 + "ABCDE") == "Authentication failed."
    assert lsg.check_cram("whatever", auth, None) is None  # no key configured: any well-formed response
    assert lsg.check_cram("abc", "nothex-ABCDE", None) == "Malformed authentication request"
    assert lsg.gateway_host("GLBX.MDP3") == "glbx-mdp3.lsg.databento.com"


# ---------------------------------------------------------------------------------------------- official client


@pytest.mark.parametrize(
    ("rel", "schema", "symbol"),
    [
        (ESU4_TRADES, "trades", "ESU4"),  # DBN v1, 120 trades
        (ESU4_MBP1, "mbp-1", "ESU4"),  # DBN v1, 2288 MBP-1
        (ESH1_TRADES_V3, "trades", "ESH1"),  # DBN v3
        (ESH1_MBP1_V3, "mbp-1", "ESH1"),
        (ESH1_MBO_V3, "mbo", "ESH1"),
        (ESH1_TRADES_V2, "trades", "ESH1"),  # DBN v2
    ],
)
def test_official_client_receives_exactly_the_file(venues, rel, schema, symbol):
    path = sample(rel)
    venue = venues.start([path], close_at_end=True)
    client, got = official(venue.port, "GLBX.MDP3", [(schema, symbol)])
    expected = file_records(path)
    received = data_only(got)
    assert len(received) == len(expected)
    for ours, theirs in zip(received, expected, strict=True):
        assert bytes(ours) == bytes(theirs), (ours, theirs)  # every field, byte for byte
    mappings = [r for r in got if isinstance(r, dbn.SymbolMappingMsg)]
    assert [(m.instrument_id, m.stype_in_symbol, m.stype_out_symbol) for m in mappings] == [
        (expected[0].instrument_id, symbol, symbol)]
    assert got.index(mappings[0]) < got.index(received[0])  # the mapping comes before the data
    assert client.symbology_map == {expected[0].instrument_id: symbol}
    acks = [r for r in got if isinstance(r, dbn.SystemMsg) and not r.is_heartbeat()]
    assert len(acks) == 1 and schema in acks[0].msg


def test_official_client_other_dataset(venues):
    path = sample(NVDA_TRADES_V3)
    venue = venues.start([path, sample(ESH1_TRADES_V3)], close_at_end=True)
    _, got = official(venue.port, "XNAS.ITCH", [("trades", "NVDA")])
    assert [bytes(r) for r in data_only(got)] == [bytes(r) for r in file_records(path)]


def test_official_client_two_schemas_interleaved_by_time(venues):
    trades, mbp1 = sample(ESU4_TRADES), sample(ESU4_MBP1)
    venue = venues.start([trades, mbp1], close_at_end=True)
    _, got = official(venue.port, "GLBX.MDP3", [("trades", "ESU4"), ("mbp-1", ["ESU4"])])
    received = data_only(got)
    assert [bytes(r) for r in received if isinstance(r, dbn.TradeMsg)] == [bytes(r) for r in file_records(trades)]
    assert [bytes(r) for r in received if isinstance(r, dbn.MBP1Msg)] == [bytes(r) for r in file_records(mbp1)]
    stamps = [r.ts_event for r in received]
    assert stamps == sorted(stamps)  # both files are in time order, so the merge is too


def test_all_symbols_from_a_recorded_live_session(venues):
    path = sample(LIVE_V3)  # mixed schemas (metadata schema 0xFFFF): served by record type
    venue = venues.start([path], close_at_end=True)
    client, got = official(venue.port, "GLBX.MDP3", [("trades", "ALL_SYMBOLS"), ("mbp-10", "ALL_SYMBOLS")])
    expected = [r for r in file_records(path) if isinstance(r, dbn.TradeMsg | dbn.MBP10Msg)]
    assert [bytes(r) for r in data_only(got)] == [bytes(r) for r in expected]
    assert client.symbology_map == {183748: "ESZ4"}


def test_official_client_ts_out(venues):
    path = sample(ESH1_TRADES_V3)
    venue = venues.start([path], close_at_end=True)
    before = time.time_ns()
    _, got = official(venue.port, "GLBX.MDP3", [("trades", "ESH1")], ts_out=True)
    received = data_only(got)
    expected = file_records(path)
    for ours, theirs in zip(received, expected, strict=True):
        raw, want = bytes(ours), bytes(theirs)
        assert raw[0] == want[0] + 2 and len(raw) == len(want) + 8  # the length counts ts_out
        assert raw[1 : len(want)] == want[1:]
    assert all(r.ts_out >= before for r in received)


def test_wrong_key_is_refused_by_a_venue_with_a_key(venues):
    path = sample(ESH1_TRADES_V3)
    venue = venues.start([path], close_at_end=True, api_key=KEY)
    with pytest.raises(db.BentoError, match="Authentication failed"):
        official(venue.port, "GLBX.MDP3", [("trades", "ESH1")], key="db-" + "Z" * 27 + "ABCDE")
    _, got = official(venue.port, "GLBX.MDP3", [("trades", "ESH1")], key=KEY)
    assert len(data_only(got)) == 4


def test_unknown_dataset_is_refused(venues):
    venue = venues.start([sample(ESH1_TRADES_V3)], close_at_end=True)
    with pytest.raises(db.BentoError, match="Unknown dataset 'XNAS.ITCH'"):
        official(venue.port, "XNAS.ITCH", [("trades", "NVDA")])


def test_unknown_symbol_gets_an_error_record_and_the_rest_is_served(venues):
    path = sample(ESH1_TRADES_V3)
    venue = venues.start([path], close_at_end=True)
    client, got = started(venue.port, "GLBX.MDP3", [("trades", ["ESH1", "NOPE"])])
    with pytest.raises(db.BentoError, match="Failed to resolve symbol.*NOPE"):
        client.block_for_close(timeout=20)  # the client raises collected gateway errors at the end
    errors = [r for r in got if isinstance(r, dbn.ErrorMsg)]
    assert [e.code for e in errors] == [dbn.ErrorCode.SYMBOL_RESOLUTION_FAILED]
    assert len(data_only(got)) == 4


def test_heartbeats_when_idle_after_the_data(venues):
    venue = venues.start([sample(ESH1_TRADES_V3)], heartbeat_interval=0.05)
    client, got = started(venue.port, "GLBX.MDP3", [("trades", "ESH1")])
    try:
        wait_until(lambda: sum(isinstance(r, dbn.SystemMsg) and r.is_heartbeat() for r in list(got)) >= 3,
                   what="3 heartbeats")
        assert client.is_connected()  # the session stays open after the data, like a live gateway
    finally:
        client.stop()
        client.block_for_close(timeout=10)
    assert len(data_only(got)) == 4


# ---------------------------------------------------------------------------------------------- raw protocol


def _raw_session(port: int, lines: list[bytes]) -> list:
    """Speak the control phase by hand and decode what follows with databento_dbn."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        buf = lsg.LineBuffer()

        def line() -> bytes:
            while (got := buf.next_line()) is None:
                buf.feed(sock.recv(4096))
            return got

        lsg.decode_line(line(), lsg.Greeting)
        cram = lsg.decode_line(line(), lsg.Challenge).cram
        sock.sendall(lsg.encode_line(lsg.AuthRequest(auth=lsg.cram_response(cram, KEY), dataset="GLBX.MDP3")))
        assert lsg.decode_line(line(), lsg.AuthResponse).success == "1"
        sock.sendall(b"".join(lines) + lsg.encode_line(lsg.SessionStart()))
        decoder = dbn.DBNDecoder()
        decoder.write(buf.rest())
        while data := sock.recv(1 << 16):
            decoder.write(data)
        return decoder.decode()


def test_invalid_subscriptions_get_error_codes(venues):
    venue = venues.start([sample(ESH1_TRADES_V3)], close_at_end=True)
    lines = [
        lsg.encode_line(lsg.SubscriptionRequest(schema="nope", stype_in="raw_symbol", symbols="ESH1")),
        lsg.encode_line(lsg.SubscriptionRequest(schema="trades", stype_in="smart", symbols="ESH1")),
        lsg.encode_line(lsg.SubscriptionRequest(schema="trades", stype_in="raw_symbol", symbols="ZZZ")),
        lsg.encode_line(lsg.SubscriptionRequest(schema="trades", stype_in="instrument_id", symbols="5482")),
    ]
    out = _raw_session(venue.port, lines)
    meta, records = out[0], out[1:]
    assert (meta.schema, meta.stype_in, meta.stype_out, meta.symbols) == (None, None, dbn.SType.INSTRUMENT_ID, [])
    errors = [(r.code, r.err) for r in records if isinstance(r, dbn.ErrorMsg)]
    assert [c for c, _ in errors] == [5, 5, 4]
    assert "nope" in errors[0][1] and "smart" in errors[1][1] and "ZZZ" in errors[2][1]
    assert sum(isinstance(r, dbn.TradeMsg) for r in records) == 4  # by instrument_id


def test_batched_subscription_is_one_subscription(venues):
    venue = venues.start([sample(ESH1_TRADES_V3)], close_at_end=True)
    lines = [lsg.encode_line(x) for x in lsg.subscription_requests("trades", [f"X{i}" for i in range(600)] + ["ESH1"])]
    records = _raw_session(venue.port, lines)[1:]
    acks = [r for r in records if isinstance(r, dbn.SystemMsg)]
    assert len(acks) == 1 and acks[0].code == dbn.SystemCode.SUBSCRIPTION_ACK
    errors = [r for r in records if isinstance(r, dbn.ErrorMsg)]
    assert len(errors) == 1 and "and 580 more" in errors[0].err
    assert sum(isinstance(r, dbn.TradeMsg) for r in records) == 4


# ---------------------------------------------------------------------------------------------- serving


def test_pacing_by_ts_event(venues):
    path = sample(ESH1_TRADES_V3)  # 4 trades over 0.475 s of event time
    span = (file_records(path)[-1].ts_event - file_records(path)[0].ts_event) / 1e9
    venue = venues.start([path], speed=1.0)
    session, _ = open_session(venue.port, "ESH1")
    try:
        start = time.monotonic()
        got = collect(session, lambda r: len(r) >= 4)
        elapsed = time.monotonic() - start
    finally:
        session.close()
    assert len(got) == 4
    assert elapsed >= 0.9 * span  # never faster than the data (upper bounds are not asserted)


def test_several_sessions_at_once_and_loop(venues):
    venue = venues.start([sample(ESU4_TRADES)], loop=True)
    first, _ = open_session(venue.port, "ESU4")
    second, _ = open_session(venue.port, "ESU4")
    try:
        wait_until(lambda: venue.active_sessions == 2, what="two sessions")
        a = collect(first, lambda r: len(r) >= 240)  # the file twice: loop=True serves it again
        b = collect(second, lambda r: len(r) >= 240)
    finally:
        first.close()
        second.close()
    assert (a["price"][:120] == a["price"][120:240]).all()
    assert (a["price"][:240] == b["price"][:240]).all()
    wait_until(lambda: venue.active_sessions == 0, what="sessions closed by the clients")


def test_stop_closes_every_session(venues):
    venue = venues.start([sample(ESU4_TRADES)], speed=10.0)
    session, _ = open_session(venue.port, "ESU4")
    try:
        collect(session, lambda r: len(r) >= 1)
        venue.stop()
        assert not [t for t in threading.enumerate() if t.name.startswith(("lsg-", "lsg-accept"))]
        with pytest.raises(SessionError, match="closed the connection"):
            collect(session, lambda r: False)
    finally:
        session.close()


def test_bad_files_are_refused_with_their_name(tmp_path):
    good = read_file(sample(ESH1_TRADES_V3))
    truncated = tmp_path / "truncated.dbn"
    truncated.write_bytes(good[:-10])
    with pytest.raises(ValueError, match="truncated.dbn.*truncated or corrupt record"):
        load_venue_file(str(truncated))
    garbage = tmp_path / "garbage.dbn"
    garbage.write_bytes(b"PK\x03\x04 not a dbn file at all")
    with pytest.raises(DbnError, match="not DBN"):
        load_venue_file(str(garbage))
    with pytest.raises(ValueError, match="must share one DBN version"):
        DatabentoVenue([sample(ESH1_TRADES_V3), sample(ESU4_TRADES)])
    with pytest.raises(ValueError, match="`speed` must be 'max' or a number > 0"):
        DatabentoVenue([sample(ESH1_TRADES_V3)], speed=0)


def test_main_serve_in_its_own_process():
    path = str(sample(ESU4_TRADES))  # a str: its repr goes into the child's code
    code = (
        "from streamctl.ingest.vendors.databento.venue import main_serve;"
        f"main_serve([{path!r}], port=0, heartbeat_interval=0.2)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # bounded by the pytest timeout if the child hangs
        assert line.startswith("listening on 127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
        port = int(line.split()[2].rsplit(":", 1)[1])
        session, _ = open_session(port, "ESU4")
        try:
            assert len(collect(session, lambda r: len(r) >= 120)) == 120
        finally:
            session.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        proc.stdout.close()
        proc.stderr.close()


def test_subscription_during_the_session(venues):
    venue = venues.start([sample(ESU4_TRADES), sample(ESU4_MBP1)], loop=True, heartbeat_interval=0.05)
    client, got = started(venue.port, "GLBX.MDP3", [("trades", "ESU4")])
    try:
        wait_until(lambda: sum(isinstance(r, dbn.TradeMsg) for r in list(got)) >= 120, what="the trades")
        assert not any(isinstance(r, dbn.MBP1Msg) for r in list(got))
        client.subscribe(dataset="GLBX.MDP3", schema="mbp-1", symbols="ESU4")  # while streaming
        wait_until(lambda: sum(isinstance(r, dbn.MBP1Msg) for r in list(got)) >= 100, what="mbp-1 records")
    finally:
        client.stop()
        client.block_for_close(timeout=10)
    acks = [r.msg for r in got if isinstance(r, dbn.SystemMsg) and not r.is_heartbeat()]
    assert len(acks) == 2 and "mbp-1" in acks[1]


# ---------------------------------------------------------------------------------------------- intraday replay


def test_official_client_with_start_gets_the_records_from_then_on_and_a_replay_completed(venues):
    trades, mbp1 = sample(ESU4_TRADES), sample(ESU4_MBP1)
    expected_trades, expected_mbp1 = file_records(trades), file_records(mbp1)
    start_trades = expected_trades[50].ts_event
    start_mbp1 = expected_mbp1[8].ts_event  # records 7 and 8 share this ts_event: both are served
    assert expected_mbp1[7].ts_event == start_mbp1
    venue = venues.start([trades, mbp1], heartbeat_interval=0.05)
    client = db.Live(key=KEY, gateway="127.0.0.1", port=venue.port)
    client.subscribe(dataset="GLBX.MDP3", schema="trades", symbols="ESU4", start=start_trades)
    client.subscribe(dataset="GLBX.MDP3", schema="mbp-1", symbols="ESU4", start=start_mbp1)
    got: list = []
    client.add_callback(got.append)
    client.start()
    want_trades = [bytes(r) for r in expected_trades if r.ts_event >= start_trades]
    want_mbp1 = [bytes(r) for r in expected_mbp1 if r.ts_event >= start_mbp1]
    try:
        wait_until(lambda: len(data_only(list(got))) >= len(want_trades) + len(want_mbp1), what="the replayed records")
        wait_until(lambda: any(isinstance(r, dbn.SystemMsg) and r.is_heartbeat() for r in list(got)),
                   what="a heartbeat after the data")  # nothing more comes: no record before `start`
    finally:
        client.stop()
        client.block_for_close(timeout=10)
    received = data_only(got)
    assert [bytes(r) for r in received if isinstance(r, dbn.TradeMsg)] == want_trades
    assert [bytes(r) for r in received if isinstance(r, dbn.MBP1Msg)] == want_mbp1
    assert len(want_mbp1) == len(expected_mbp1) - 7 and len(want_trades) == len(expected_trades) - 50
    codes = [(r.code, r.msg) for r in got if isinstance(r, dbn.SystemMsg) and not r.is_heartbeat()]
    replayed = [msg for code, msg in codes if code == dbn.SystemCode.REPLAY_COMPLETED]
    assert replayed == ["Finished trades replay", "Finished mbp-1 replay"], codes


def test_start_after_start_session_is_not_replayed(venues):
    path = sample(ESU4_TRADES)
    expected = file_records(path)
    venue = venues.start([path, sample(ESU4_MBP1)], loop=True, heartbeat_interval=0.05)
    client, got = started(venue.port, "GLBX.MDP3", [("mbp-1", "ESU4")])
    try:
        wait_until(lambda: sum(isinstance(r, dbn.MBP1Msg) for r in list(got)) >= 2288, what="the mbp-1 records")
        # As the real gateway: a subscription added to a started session gets no intraday replay;
        # honoured, this `start` (the last trade's time) would leave one trade per pass of the data.
        client.subscribe(dataset="GLBX.MDP3", schema="trades", symbols="ESU4", start=expected[-1].ts_event)
        wait_until(lambda: sum(isinstance(r, dbn.TradeMsg) for r in list(got)) >= 121, what="trades of every time")
    finally:
        client.stop()
        client.block_for_close(timeout=10)
    assert sum(isinstance(r, dbn.TradeMsg) and r.ts_event < expected[-1].ts_event for r in got) >= 119
    assert not any(isinstance(r, dbn.SystemMsg) and r.code == dbn.SystemCode.REPLAY_COMPLETED for r in got)


def test_drop_sessions_cuts_every_client(venues):
    venue = venues.start([sample(ESU4_TRADES)], speed=1.0)
    session, _ = open_session(venue.port, "ESU4")
    try:
        wait_until(lambda: venue.active_sessions == 1, what="the session")
        assert venue.drop_sessions() == 1
        with pytest.raises(SessionError, match="closed the connection|connection failed"):
            collect(session, lambda r: False, timeout=10)
    finally:
        session.close()

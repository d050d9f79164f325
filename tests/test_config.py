"""The typed config: valid files load, bad ones are refused naming the field, value and line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from streamctl.cli.config import ConfigError, load_config, parse_config
from streamctl.process.calc.settings import parse_interval

REPO = Path(__file__).resolve().parents[1]

GOOD = """\
name: t1
feeds:
  - name: sim
    vendor: sim
    symbols: [AAPL, MSFT]
calculators:
  bars: {time: [1s, 60s, 5m], ticks: [100], volume: [5000], dollar: [1000000]}
"""


def test_good_config_decodes_into_typed_structs():
    cfg = parse_config(GOOD)
    assert cfg.name == "t1"
    assert cfg.feeds[0].symbols == ["AAPL", "MSFT"]
    assert cfg.calculators.time_intervals() == [1, 60, 300]
    assert cfg.rings.overflow == "drop"
    assert cfg.vendor_options(cfg.feeds[0]).rate == 200.0


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate(path, monkeypatch):
    monkeypatch.setenv("DATABENTO_API_KEY", "db-" + "A" * 27 + "BCDEF")
    for name, value in {"IB_HOST": "127.0.0.1", "IB_PORT": "4002", "IB_CLIENT_ID": "1",
                        "APCA_API_KEY_ID": "PKTEST", "APCA_API_SECRET_KEY": "secret",
                        "ALPACA_STREAM_URL": "ws://127.0.0.1:8765"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(REPO)  # the configs' sample-file paths (tests/data/...) are relative to the repository root
    cfg = load_config(path)
    assert cfg.feeds


@pytest.mark.parametrize(
    ("text", "message", "line"),
    [
        ("name: x\nfeeds:\n  - name: a\n    vendor: no_such_vendor\n    symbols: [A]\n",
         "`feeds[0].vendor` must be one of alpaca, cme, databento, ibkr, replay, sim; was no_such_vendor", 4),
        ("name: x\nfeeds:\n  - name: a\n    vendor: sim\n",
         "`feeds[0].symbols` is required for vendor sim", 3),
        ("name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\ncalculators:\n  bars: {time: [0s]}\n",
         "`calculators.bars.time[0]` must be a whole number of seconds > 0; was 0s", 5),
        ("name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\ncalculators:\n  bars: {time: [0]}\n",
         "`calculators.bars.time[0]` must be a whole number of seconds > 0; was 0", 5),
        ("name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A], colour: red}\n",
         "`feeds[0].colour` is not a known field", 3),
        ('name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A], "co\\nl\\tour": red}\n',
         "`feeds[0].co\\nl\\tour` is not a known field", 3),
        ('name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\n"\\n\\x07": 1\n',
         "`\\n\\x07` is not a known field", None),
        ("name: x\npartitions: {count: 0}\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\n",
         "`partitions.count` must be int >= 1; was 0", 2),
        ("name: x\nrings: {capacity: 1000}\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\n",
         "`rings.capacity` must be a power of two; was 1000", 2),
        ("name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A], options: {rate: -1}}\n",
         "`feeds[0].options.rate`", 3),
        ("name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\n  - {name: a, vendor: sim, symbols: [B]}\n",
         "`feeds[1].name` must be unique among feeds; was a", 4),
        ("name: x\nfeeds: []\n", "`feeds`", 2),
        ("feeds:\n  - {name: a, vendor: sim, symbols: [A]}\n", "`name` is required", None),
        ("name: Bad Name\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\n", "`name`", 1),
        ("name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\npublish: {endpoint: 'localhost'}\n",
         "`publish.endpoint` must be tcp://HOST:PORT or ipc://PATH; was localhost", 4),
        ("name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\ncalculators: {vwap: {timezone: Mars/Olympus}}\n",
         "`calculators.vwap.timezone` must be an IANA time zone; was Mars/Olympus", 4),
        ("name: x\nfeeds: [\n", "not valid YAML", None),
        ("name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\nmetrics: {listen: '0.0.0.0:9464'}\n",
         "`metrics.listen` must be a loopback address (127.0.0.1, ::1, localhost) unless remote access is "
         "allowed (`metrics.allow_remote: true`); was 0.0.0.0:9464", 4),
        ("name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A]}\nmetrics: {listen: '127.0.0.1:http'}\n",
         "`metrics.listen` must be HOST:PORT with a port in 1..65535; was 127.0.0.1:http", 4),
    ],
)
def test_bad_config_is_refused_naming_field_value_and_line(text, message, line):
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="x.yaml")
    text_out = str(info.value)
    assert message in text_out
    assert "\n" not in text_out
    if line is not None:
        assert text_out.endswith(f"(x.yaml line {line})")


@settings(max_examples=200, deadline=None)
@given(key=st.text(min_size=1, max_size=12), value=st.text(max_size=12))
def test_any_unknown_key_or_bad_value_is_refused_on_one_line(key, value):
    """Keys and values straight from a config (newlines, control characters, any code point)
    are escaped in the error, never spliced raw into it."""
    text = yaml.safe_dump({"name": "x", "feeds": [{"name": "a", "vendor": "sim", "symbols": [value],
                                                   key: 1}]})
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ={})
    assert str(info.value).isprintable()


def test_env_interpolation_and_secret_never_echoed():
    text = "name: x\nfeeds:\n  - {name: a, vendor: sim, symbols: [A], options: {seed: '${SEED}'}}\n"
    with pytest.raises(ConfigError, match="needs environment variable SEED, which is not set"):
        parse_config(text, environ={})
    with pytest.raises(ConfigError) as info:
        parse_config(text, environ={"SEED": "hunter2-secret"})
    assert "hunter2-secret" not in str(info.value)
    assert "<from environment>" in str(info.value)
    cfg = parse_config(text.replace("'${SEED}'", "7"), environ={})
    assert cfg.vendor_options(cfg.feeds[0]).seed == 7


@pytest.mark.parametrize(("value", "seconds"), [("1s", 1), ("60s", 60), ("5m", 300), ("1h", 3600), (15, 15), ("2", 2)])
def test_parse_interval(value, seconds):
    assert parse_interval(value) == seconds


@pytest.mark.parametrize("value", ["0s", 0, -5, "1.5s", "abc", True])
def test_parse_interval_refuses(value):
    with pytest.raises(ValueError):
        parse_interval(value)

"""Configs that are hostile or impossible are refused at once, naming the field."""

from __future__ import annotations

import pytest

from streamctl.cli.config import MAX_CONFIG_VALUES, ConfigError, parse_config

FEED = "name: x\nfeeds:\n  - {{name: a, vendor: sim, symbols: {symbols}}}\n"


def _alias_bomb(levels: int = 9) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n" + FEED.format(symbols="[A]")


@pytest.mark.timeout(10)
def test_an_alias_bomb_is_refused_before_it_is_built():
    with pytest.raises(ConfigError, match=f"expands to more than {MAX_CONFIG_VALUES:,} values through YAML aliases"):
        parse_config(_alias_bomb())


def test_modest_aliases_are_fine():
    text = "calc: &calc {bars: {time: [1s]}}\ncalculators: *calc\n" + FEED.format(symbols="[A]")
    with pytest.raises(ConfigError, match="`calc` is not a known field"):
        parse_config(text)  # the alias expands; the unknown top-level key is what is refused
    assert parse_config(FEED.format(symbols="[A]") + "calculators: &c {bars: {time: [1s]}}\n").feeds


def test_an_oversized_config_is_refused():
    with pytest.raises(ConfigError, match="a plant config is at most"):
        parse_config("# " + "x" * (1 << 20) + "\n" + FEED.format(symbols="[A]"))


@pytest.mark.parametrize(("symbols", "message"), [
    ("[A, '', B]", r"`feeds\[0\].symbols\[1\]` must be a non-empty symbol"),
    ("[' A']", r"`feeds\[0\].symbols\[0\]` must be a non-empty symbol without leading or trailing spaces"),
    ('["A\\0B"]', r"`feeds\[0\].symbols\[0\]` must be printable ASCII .*; was 'A\\x00B'"),
    ('["caf\\u00e9"]', r"`feeds\[0\].symbols\[0\]` must be printable ASCII"),
    ("[" + "X" * 48 + "]", r"`feeds\[0\].symbols\[0\]` must be at most 47 characters"),
    ("[A, B, A]", r"`feeds\[0\].symbols\[2\]` repeats feeds\[0\].symbols\[0\]; was A"),
])
def test_bad_symbols_are_refused(symbols, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(FEED.format(symbols=symbols))


def test_good_symbols_pass():
    cfg = parse_config(FEED.format(symbols="[ESZ4, 'BTC/USD', ES.FUT, 'AAPL  241220C00150000', " + "Y" * 47 + "]"))
    assert len(cfg.feeds[0].symbols or []) == 5


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:0", "tcp://127.0.0.1:65536", "tcp://127.0.0.1:99999"])
def test_public_port_must_be_fixed_and_valid(endpoint):
    with pytest.raises(ConfigError, match=r"`publish.endpoint` must have a port in 1..65535"):
        parse_config(FEED.format(symbols="[A]") + f"publish: {{endpoint: '{endpoint}'}}\n")


def test_partitions_are_bounded():
    with pytest.raises(ConfigError, match=r"`partitions.count` must be int <= 256; was 100000"):
        parse_config(FEED.format(symbols="[A]") + "partitions: {count: 100000}\n")


def test_feeds_are_bounded_by_what_a_worker_can_sleep_on():
    feeds = "".join(f"  - {{name: f{i}, vendor: sim, symbols: [A]}}\n" for i in range(129))
    with pytest.raises(ConfigError, match=r"`feeds` must be .*length <= 128"):
        parse_config("feeds:\n" + feeds)

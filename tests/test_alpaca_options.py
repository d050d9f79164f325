"""`feeds[i].options` of an alpaca feed: endpoints, the delayed feed's clock, refusals by name."""

from __future__ import annotations

import msgspec
import pytest

from streamctl.cli.config import ConfigError, parse_config
from streamctl.ingest.vendors import vendor_spec
from streamctl.ingest.vendors.alpaca.options import Options


def _options(**raw) -> Options:
    return msgspec.convert({"key": "PKTEST", "secret": "s3cr3t", **raw}, Options)


@pytest.mark.parametrize("raw, endpoint", [
    ({}, "wss://stream.data.alpaca.markets/v2/iex"),
    ({"feed": "sip"}, "wss://stream.data.alpaca.markets/v2/sip"),
    ({"feed": "delayed_sip"}, "wss://stream.data.alpaca.markets/v2/delayed_sip"),
    ({"feed": "crypto"}, "wss://stream.data.alpaca.markets/v1beta3/crypto/us"),
    ({"url": "ws://127.0.0.1:8765"}, "ws://127.0.0.1:8765/v2/iex"),
    ({"url": "ws://127.0.0.1:8765/", "feed": "crypto"}, "ws://127.0.0.1:8765/v1beta3/crypto/us"),
    ({"url": "wss://stream.data.sandbox.alpaca.markets/v2/test"}, "wss://stream.data.sandbox.alpaca.markets/v2/test"),
])
def test_endpoint(raw, endpoint):
    assert _options(**raw).endpoint() == endpoint


def test_delayed_sip_event_time_is_not_now_though_the_vendor_is_live():
    spec = vendor_spec("alpaca")
    assert spec.live
    assert spec.event_time_is_now(_options(feed="iex")) and spec.event_time_is_now(_options(feed="crypto"))
    assert not spec.event_time_is_now(_options(feed="delayed_sip"))


def test_repr_never_shows_the_key_or_secret():
    text = repr(_options()) + str(_options())
    assert "PKTEST" not in text and "s3cr3t" not in text and "v2/iex" in text


@pytest.mark.parametrize("options, message", [
    ("{key: k, secret: s, feed: boats}", "`feeds[0].options.feed` invalid enum value 'boats'"),
    ("{key: k, secret: s, url: 'http://x'}", "`feeds[0].options.url`"),
    ("{key: k, secret: s, channels: [bars]}", "`feeds[0].options.channels[0]`"),
    ("{key: k}", "`feeds[0].options.secret` is required"),
])
def test_bad_options_are_refused_naming_the_field(options, message):
    text = f"name: x\nfeeds:\n  - name: a\n    vendor: alpaca\n    symbols: [AAPL]\n    options: {options}\n"
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_config(text)

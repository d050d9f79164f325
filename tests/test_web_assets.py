"""The web view's assets and WebSocket protocol, without a browser: the vendored chart library is
the pinned npm release with its licence, pages load nothing from the network, and a browser's
bad request is answered, not fatal."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

from _common import free_port

from streamctl.web.assets import CHARTS_JS, CHARTS_SHA256, CHARTS_VERSION, STATIC


def test_vendored_chart_library_is_the_pinned_release_with_its_licence():
    assert hashlib.sha256(CHARTS_JS.read_bytes()).hexdigest() == CHARTS_SHA256
    assert f"Lightweight Charts™ v{CHARTS_VERSION}\n" in CHARTS_JS.read_text()[:400]
    licence = (CHARTS_JS.parent / "lightweight-charts.LICENSE").read_text()
    assert "Apache License" in licence and "TradingView" in licence


def test_the_page_loads_only_its_own_files():
    page = (STATIC / "index.html").read_text()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    local = [s for s in sources if not s.startswith("https://www.tradingview.com/")]  # the attribution link
    assert local and all(s.startswith("static/") and (STATIC / s.removeprefix("static/")).is_file() for s in local)


def test_socket_answers_a_bad_request_and_sends_the_snapshot_of_a_good_one():
    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from streamctl.web.bridge import Bridge
    from streamctl.web.server import make_app

    async def talk() -> tuple[dict, dict]:
        server = TestServer(make_app(Bridge(f"tcp://127.0.0.1:{free_port()}")), host="127.0.0.1")
        await server.start_server()
        try:
            async with ClientSession() as session, session.ws_connect(server.make_url("/ws")) as ws:
                first = json.loads((await ws.receive(timeout=30)).data)
                for bad in ("not json", json.dumps({"watch": {"symbol": "A*", "interval": "1s"}}),
                            json.dumps({"watch": {"symbol": "AAPL"}})):
                    await ws.send_str(bad)
                    error = json.loads((await ws.receive(timeout=30)).data)
                    assert "expected" in error["error"], bad
                await ws.send_str(json.dumps({"watch": {"symbol": "AAPL", "interval": "1s"}}))
                snapshot = json.loads((await ws.receive(timeout=30)).data)
                return first, snapshot
        finally:
            await server.close()

    first, snapshot = asyncio.run(talk())
    assert first["processes"] == [] and first["catalog"] == {"symbols": [], "intervals": []}
    assert snapshot["snapshot"] == {"symbol": "AAPL", "interval": "1s", "bars": [], "anomalies": [], "trades": [],
                                    "book": None}

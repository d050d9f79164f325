"""The page assets shipped as package data, and the one standalone chart page (`streamctl plot`).

The chart library is TradingView's Lightweight Charts, vendored from its npm release
(`static/vendor/README.md` says why and how to refresh it); `CHARTS_SHA256` pins the file.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["STATIC", "CHARTS_JS", "CHARTS_VERSION", "CHARTS_SHA256", "standalone_chart"]

STATIC = Path(__file__).resolve().parent / "static"
CHARTS_JS = STATIC / "vendor" / "lightweight-charts.standalone.production.js"
CHARTS_VERSION = "5.2.1"
CHARTS_SHA256 = "e21cc5caa0226ef30bd8549c50b9ef926615f2a4ee6b4e486353477a55f598cf"


def _script(text: str) -> str:
    # "</" ends a <script> element early whatever the JavaScript means by it.
    return "<script>" + text.replace("</", "<\\/") + "</script>"


def standalone_chart(title: str, bars: list[dict[str, Any]], anomalies: list[dict[str, Any]],
                     interval_s: int) -> str:
    """One HTML file with everything inlined (library, drawing code, data): opens anywhere, offline."""
    data = msgspec.json.encode({"bars": bars, "anomalies": anomalies, "interval": interval_s}).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>html,body{{margin:0;height:100%;background:#11161c;color:#c9d1d9;font:14px system-ui,sans-serif}}
header{{padding:6px 10px}} #chart{{position:absolute;top:32px;bottom:0;left:0;right:0}}</style></head>
<body><header>{html.escape(title)} &middot; <span id="count"></span> bars &middot; chart by
<a href="https://www.tradingview.com/" style="color:#58a6ff">TradingView Lightweight Charts</a></header>
<div id="chart"></div>
{_script(CHARTS_JS.read_text())}
{_script((STATIC / "candles.js").read_text())}
{_script("const DATA = " + data + ";")}
{_script('''const view = StreamctlCandles.create(document.getElementById("chart"));
view.setBars(DATA.bars);
view.setAnomalies(DATA.anomalies, DATA.interval);
view.fit();
document.getElementById("count").textContent = DATA.bars.length;''')}
</body></html>
"""

"""`streamctl plot`: bars in `replay --out` form -> one HTML file that, opened offline in headless
Chromium, draws exactly the candles and anomaly markers of the chosen symbol and interval."""

from __future__ import annotations

import pytest
from _browser import chromium
from _common import wait_until
from plant_helpers import PlantCli

from streamctl.bus.wire import Anomaly, Bar
from streamctl.cli.replaying import write_rows
from streamctl.cli.tailing import to_row

pytestmark = pytest.mark.timeout(180)

T0 = 1_700_000_040 * 10**9  # a whole minute


def _bars(symbol: str, seconds: int, count: int, *, skip: int | None = None) -> list[dict]:
    rows, price = [], 100.0
    for i in range(count):
        if i == skip:
            continue  # a minute without trades: no bar
        start = T0 + i * seconds * 10**9
        close = price + (0.5 if i % 3 else -0.7)
        bar = Bar(symbol=symbol, interval=f"{seconds}s", ts_start=start, ts_end=start + seconds * 10**9,
                  open=price, high=max(price, close) + 0.2, low=min(price, close) - 0.2, close=close,
                  volume=100.0 + i, trades=5, vwap=(price + close) / 2, ts_event=start + 10**9,
                  ts_recv=start + 10**9, seq=i + 1, src="worker-0")
        rows.append(to_row(f"bar.{seconds}s.{symbol}", bar))
        price = close
    return rows


def _anomaly(symbol: str, at_s: float) -> dict:
    ts = T0 + int(at_s * 1e9)
    return to_row(f"anomaly.{symbol}", Anomaly(symbol=symbol, rule="jump", detail="jump 6%", value=6.0,
                                               threshold=5.0, price=101.0, ts_event=ts, ts_recv=ts, seq=1))


@pytest.fixture
def rows() -> list[dict]:
    # 40 minutes of AAPL with one empty minute (39 candles), MSFT and AAPL 1 s bars that must not
    # be drawn, and AAPL anomalies in minutes 0, 2 and 2 (two markers on one candle) plus MSFT's.
    return sorted([*_bars("AAPL", 60, 40, skip=7), *_bars("MSFT", 60, 12), *_bars("AAPL", 1, 90),
                   _anomaly("AAPL", 3), _anomaly("AAPL", 150), _anomaly("AAPL", 170), _anomaly("MSFT", 10)],
                  key=lambda r: (r.get("ts_event", 0), r["topic"]))


def _drawn(tmp_path, html) -> tuple[int, int]:
    with chromium(tmp_path) as driver:
        driver.get(html.as_uri())
        chart = driver.find_element("id", "chart")
        wait_until(lambda: chart.get_attribute("data-candles"), 30, "the chart to draw")
        assert driver.find_elements("css selector", "#chart canvas")
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        # Self-contained: the page fetched nothing (no script, style or image from anywhere).
        assert driver.execute_script("return performance.getEntriesByType('resource').length") == 0
        return int(chart.get_attribute("data-candles")), int(chart.get_attribute("data-anomalies"))


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_plot_draws_the_candles_of_one_symbol_and_interval(tmp_path, rows, suffix):
    source = tmp_path / f"bars{suffix}"
    write_rows(rows, str(source))
    if suffix == ".jsonl":
        with open(source, "a") as fh:
            fh.write('{"topic": "bar.60s.AAPL", "open": \n')  # a cut line: counted, skipped, said
    cli = PlantCli(tmp_path)
    html = tmp_path / "chart.html"
    proc = cli.run("plot", str(source), "--symbol", "AAPL", "--interval", "1m", "--out", str(html), check=True)
    assert f"{html}: 39 candles, 3 anomalies" in proc.stdout
    if suffix == ".jsonl":
        assert "skipped 1 bad row(s); first:" in proc.stderr and "not JSON" in proc.stderr
    assert _drawn(tmp_path, html) == (39, 3)


def test_plot_refuses_what_it_cannot_draw(tmp_path, rows):
    source = tmp_path / "bars.jsonl"
    write_rows(rows, str(source))
    cli = PlantCli(tmp_path)
    out = str(tmp_path / "x.html")
    tick = cli.run("plot", str(source), "--symbol", "AAPL", "--interval", "100t", "--out", out)
    assert tick.returncode == 1 and "`--interval` must be a time interval (1s, 60s, 5m, 1h); was 100t" in tick.stderr
    none = cli.run("plot", str(source), "--symbol", "NVDA", "--interval", "60s", "--out", out)
    assert none.returncode == 1 and f"no 60s bars of NVDA in {source}" in none.stderr

// One candlestick chart (candles, volume, a bar-VWAP line, anomaly markers) on TradingView's
// Lightweight Charts. Shared by the live page (app.js) and `streamctl plot`'s standalone file.
// The container's `data-candles` attribute is the number of candles the series holds, read
// back from the library, so a test (or a person) can see what was drawn.
"use strict";

window.StreamctlCandles = (function () {
  const LC = window.LightweightCharts;

  function create(container) {
    const chart = LC.createChart(container, {
      autoSize: true,
      layout: { background: { color: "#11161c" }, textColor: "#c9d1d9" },
      grid: { vertLines: { color: "#1f2630" }, horzLines: { color: "#1f2630" } },
      timeScale: { timeVisible: true, secondsVisible: true },
    });
    const candles = chart.addSeries(LC.CandlestickSeries, {
      upColor: "#26a69a", downColor: "#ef5350", borderVisible: false,
      wickUpColor: "#26a69a", wickDownColor: "#ef5350",
    });
    const volume = chart.addSeries(LC.HistogramSeries, {
      priceFormat: { type: "volume" }, priceScaleId: "volume",
    });
    chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
    candles.priceScale().applyOptions({ scaleMargins: { top: 0.05, bottom: 0.25 } });
    const vwap = chart.addSeries(LC.LineSeries, { color: "#f0b429", lineWidth: 1, title: "VWAP" });
    const markers = LC.createSeriesMarkers(candles, []);
    let anomalies = [];

    // A bar (payload fields of `bar.*` topics) -> the three series' points. Times are seconds.
    function points(bar) {
      const time = Math.floor(bar.ts_start / 1e9);
      const up = bar.close >= bar.open;
      return {
        candle: { time, open: bar.open, high: bar.high, low: bar.low, close: bar.close },
        volume: { time, value: bar.volume, color: up ? "rgba(38,166,154,0.5)" : "rgba(239,83,80,0.5)" },
        vwap: bar.trades > 0 ? { time, value: bar.vwap } : { time },
      };
    }

    function mark() {
      container.dataset.candles = String(candles.data().length);
      const data = candles.data();
      container.dataset.lastTime = data.length ? String(data[data.length - 1].time) : "";
      container.dataset.lastClose = data.length ? String(data[data.length - 1].close) : "";
    }

    function setBars(bars) {
      const pts = bars.map(points);
      candles.setData(pts.map((p) => p.candle));
      volume.setData(pts.map((p) => p.volume));
      vwap.setData(pts.map((p) => p.vwap));
      mark();
    }

    // A closed bar or the forming one: replaces the candle of its time (a bar closes after the
    // next one has started forming), or appends a later one.
    function updateBar(bar) {
      const p = points(bar);
      const data = candles.data();
      let historical = false;
      if (data.length && p.candle.time < data[data.length - 1].time) {
        let i = data.length - 1;
        while (i >= 0 && data[i].time > p.candle.time) i--;
        if (i < 0 || data[i].time !== p.candle.time) return; // older than shown and not a candle of ours
        historical = true;
      }
      candles.update(p.candle, historical);
      volume.update(p.volume, historical);
      vwap.update(p.vwap, historical);
      mark();
    }

    // Anomalies ({ts_event, rule, detail, price}) as markers above their candle.
    function setAnomalies(list, interval) {
      anomalies = list.slice(-500);
      markers.setMarkers(anomalies.map((a) => ({
        time: Math.floor(a.ts_event / 1e9 / interval) * interval,
        position: "aboveBar", color: "#e040fb", shape: "arrowDown", text: a.rule,
      })).sort((a, b) => a.time - b.time));
      container.dataset.anomalies = String(anomalies.length);
    }

    function addAnomaly(a, interval) { setAnomalies(anomalies.concat([a]), interval); }

    return { chart, setBars, updateBar, setAnomalies, addAnomaly, fit: () => chart.timeScale().fitContent() };
  }

  return { create };
})();

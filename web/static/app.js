// The live page: one WebSocket to the web view's server (web/server.py), a chart of the chosen
// symbol and interval (closed bars from the plant, the forming candle from its trades), the
// book, the last trades, the process table and the supervisor's events.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const view = StreamctlCandles.create($("chart"));
  const state = { symbol: null, interval: null, seconds: 0, lastBar: null, forming: null, ws: null };
  const restartsSeen = {};
  const lastRestart = {}; // process -> why the supervisor last restarted it (from its `restart` events)

  function intervalSeconds(interval) {
    const m = /^(\d+)s$/.exec(interval); // time bars only; tick, volume and dollar bars have no clock
    return m ? Number(m[1]) : 0;
  }

  function fmt(n) {
    if (n === null || n === undefined) return "";
    const a = Math.abs(n);
    if (a >= 1e9) return (n / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return (n / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return (n / 1e3).toFixed(1) + "k";
    return String(Math.round(n * 100) / 100);
  }

  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
  }

  function renderProcesses(rows) {
    const body = $("processes").querySelector("tbody");
    body.replaceChildren();
    rows.sort((a, b) => a.name.localeCompare(b.name));
    for (const p of rows) {
      const tr = document.createElement("tr");
      tr.dataset.name = p.name;
      tr.dataset.state = p.state;
      tr.dataset.restarts = String(p.restarts);
      tr.className = "state-" + p.state;
      if (restartsSeen[p.name] !== undefined && p.restarts > restartsSeen[p.name]) tr.classList.add("restarted");
      if (p.state !== "ready" || (p.detail || "").startsWith("restarted")) tr.classList.add("restarted");
      restartsSeen[p.name] = p.restarts;
      const drops = Object.values(p.drops || {}).reduce((a, b) => a + b, 0);
      cell(tr, p.name, "text"); cell(tr, p.role, "text"); cell(tr, p.pid); cell(tr, p.state, "state text");
      cell(tr, p.restarts, "restarts"); cell(tr, fmt(p.rate_in)); cell(tr, fmt(p.rate_out));
      cell(tr, fmt(p.records_in)); cell(tr, drops); cell(tr, p.cpu_pct.toFixed(0)); cell(tr, fmt(p.rss));
      // A restarted process writes its own detail (a worker: what it restored from its journal),
      // so the reason of its last restart comes from the supervisor's event.
      const why = p.restarts > 0 && lastRestart[p.name] ? "last restart: " + lastRestart[p.name] : "";
      cell(tr, [why, p.detail || ""].filter(Boolean).join(" | "), "text detail");
      body.appendChild(tr);
    }
  }

  function addEvents(events) {
    const list = $("events");
    for (const e of events) {
      if (e.kind === "restart" || e.kind === "failed") {
        const space = e.message.indexOf(" ");
        if (space > 0) lastRestart[e.message.slice(0, space)] = e.message.slice(space + 1).split(";")[0];
      }
      const li = document.createElement("li");
      li.textContent = new Date(e.ts / 1e6).toISOString().slice(11, 19) + " " + e.source + " " + e.kind + ": " + e.message;
      list.prepend(li);
    }
    while (list.children.length > 50) list.lastChild.remove();
  }

  function fillSelect(select, values, current) {
    const have = Array.from(select.options).map((o) => o.value).join("\n");
    if (have === values.join("\n")) return;
    select.replaceChildren(...values.map((v) => new Option(v, v, false, v === current)));
  }

  function renderCatalog(catalog) {
    fillSelect($("symbol"), catalog.symbols, state.symbol);
    fillSelect($("interval"), catalog.intervals, state.interval);
    if (state.symbol === null && catalog.symbols.length && catalog.intervals.length) {
      const params = new URLSearchParams(location.search);
      const symbol = params.get("symbol") || catalog.symbols[0];
      const time = catalog.intervals.filter(intervalSeconds).sort((a, b) => intervalSeconds(a) - intervalSeconds(b));
      watch(symbol, params.get("interval") || time[0] || catalog.intervals[0]);
    }
  }

  function watch(symbol, interval) {
    state.symbol = symbol; state.interval = interval; state.seconds = intervalSeconds(interval);
    state.lastBar = null; state.forming = null;
    $("symbol").value = symbol; $("interval").value = interval;
    state.ws.send(JSON.stringify({ watch: { symbol, interval } }));
  }

  function closedBar(bar) {
    state.lastBar = bar;
    if (state.forming && state.forming.ts_start <= bar.ts_start) state.forming = null;
    view.updateBar(bar);
  }

  // The candle still forming, from trades after the last closed bar (time bars only).
  function formingFrom(trades) {
    if (!state.seconds) return;
    const width = state.seconds * 1e9;
    for (const t of trades) {
      const start = Math.floor(t.ts_event / width) * width;
      if (state.lastBar && start < state.lastBar.ts_end) continue;
      let f = state.forming;
      if (!f || f.ts_start !== start) {
        if (f && start < f.ts_start) continue;
        f = state.forming = { ts_start: start, ts_end: start + width, open: t.price, high: t.price, low: t.price,
          close: t.price, volume: 0, trades: 0, vwap: 0, notional: 0 };
      }
      f.high = Math.max(f.high, t.price); f.low = Math.min(f.low, t.price); f.close = t.price;
      f.volume += t.size; f.trades += 1; f.notional += t.price * t.size; f.vwap = f.notional / f.volume;
    }
    if (state.forming) view.updateBar(state.forming);
  }

  function renderTrades(trades) {
    const body = $("trades").querySelector("tbody");
    for (const t of trades) {
      const tr = document.createElement("tr");
      cell(tr, new Date(t.ts_event / 1e6).toISOString().slice(11, 23), "text");
      cell(tr, t.price); cell(tr, fmt(t.size)); cell(tr, t.side);
      body.prepend(tr);
    }
    while (body.children.length > 50) body.lastChild.remove();
  }

  function renderBook(book) {
    const body = $("book").querySelector("tbody");
    body.replaceChildren();
    if (!book) return;
    const depth = Math.max(book.bids.length, book.asks.length);
    for (let i = 0; i < depth; i++) {
      const tr = document.createElement("tr");
      const bid = book.bids[i] || ["", ""], ask = book.asks[i] || ["", ""];
      cell(tr, fmt(bid[1]), "bid"); cell(tr, bid[0], "bid"); cell(tr, ask[0], "ask"); cell(tr, fmt(ask[1]), "ask");
      body.appendChild(tr);
    }
  }

  function onChanges(msg) {
    if (msg.catalog) renderCatalog(msg.catalog);
    if (msg.processes) renderProcesses(msg.processes);
    if (msg.events) addEvents(msg.events);
    if (msg.snapshot) {
      const s = msg.snapshot;
      if (s.symbol !== state.symbol || s.interval !== state.interval) return;
      $("trades").querySelector("tbody").replaceChildren();
      view.setBars(s.bars);
      state.lastBar = s.bars.length ? s.bars[s.bars.length - 1] : null;
      view.setAnomalies(s.anomalies, state.seconds || 1);
      view.fit();
      renderTrades(s.trades);
      formingFrom(s.trades);
      renderBook(s.book);
    }
    if (msg.bars) msg.bars.forEach(closedBar);
    if (msg.trades) { renderTrades(msg.trades); formingFrom(msg.trades); }
    if (msg.anomalies) msg.anomalies.forEach((a) => view.addAnomaly(a, state.seconds || 1));
    if (msg.book) renderBook(msg.book);
  }

  function connect() {
    const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws");
    state.ws = ws;
    ws.onopen = () => { $("conn").textContent = "live"; $("conn").className = "up";
      if (state.symbol) watch(state.symbol, state.interval); };
    ws.onmessage = (ev) => onChanges(JSON.parse(ev.data));
    ws.onclose = () => { $("conn").textContent = "disconnected"; $("conn").className = "down";
      setTimeout(connect, 1000); };
  }

  $("symbol").onchange = () => watch($("symbol").value, state.interval);
  $("interval").onchange = () => watch(state.symbol, $("interval").value);
  connect();
})();

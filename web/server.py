"""The web view's HTTP side: the page, its static files, and one WebSocket per browser.

aiohttp serves ``/`` (the page), ``/static/...`` (our scripts and the vendored chart library,
from the package data: nothing is fetched from the network) and ``/ws``. A browser sends
``{"watch": {"symbol": S, "interval": I}}`` to choose a chart; the server sends JSON objects
of changes (``processes``, ``catalog``, ``events``, ``snapshot``, ``bars``, ``trades``,
``book``, ``anomalies``), at most one every `FLUSH_SECONDS`, from its `View`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from streamctl.web.assets import STATIC
from streamctl.web.bridge import Bridge, View

__all__ = ["make_app", "serve", "FLUSH_SECONDS"]

FLUSH_SECONDS = 0.2
"""Longest a browser waits for a change; changes in between are coalesced into one message."""

_BRIDGE = web.AppKey("bridge", Bridge)
_encode = msgspec.json.Encoder().encode


async def _index(request: web.Request) -> web.FileResponse:  # noqa: ARG001
    return web.FileResponse(STATIC / "index.html")


async def _socket(request: web.Request) -> web.WebSocketResponse:
    bridge = request.app[_BRIDGE]
    ws = web.WebSocketResponse(heartbeat=30)
    await ws.prepare(request)
    view = View()
    bridge.add(view)
    sender = asyncio.create_task(_send(ws, view))
    try:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            watch = _watch_request(msg.data)
            if watch is None:
                await ws.send_bytes(_encode({"error": "expected {\"watch\": {\"symbol\": S, \"interval\": I}}"}))
                continue
            bridge.watch(view, *watch)
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        bridge.remove(view)
    return ws


def _watch_request(text: str) -> tuple[str, str] | None:
    """(symbol, interval) of a ``{"watch": ...}`` message, or None if it is not one."""
    try:
        data: Any = msgspec.json.decode(text)
        symbol, interval = data["watch"]["symbol"], data["watch"]["interval"]
    except (msgspec.DecodeError, KeyError, TypeError):
        return None
    if not (isinstance(symbol, str) and isinstance(interval, str) and symbol.isascii() and interval.isascii()
            and symbol.isprintable() and 0 < len(symbol) <= 47 and 0 < len(interval) <= 16):
        return None
    if symbol.endswith((".", "*")):  # a prefix, not a symbol: it would subscribe to every symbol's trades
        return None
    return symbol, interval


async def _send(ws: web.WebSocketResponse, view: View) -> None:
    while not ws.closed:
        await view.ready.wait()
        changes = view.take()
        if changes:
            await ws.send_str(_encode(changes).decode())
        await asyncio.sleep(FLUSH_SECONDS)


def make_app(bridge: Bridge) -> web.Application:
    app = web.Application()
    app[_BRIDGE] = bridge
    app.router.add_get("/", _index)
    app.router.add_get("/ws", _socket)
    app.router.add_static("/static", STATIC, follow_symlinks=False)

    async def receive(app: web.Application):
        task = asyncio.create_task(bridge.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app.cleanup_ctx.append(receive)
    return app


def serve(endpoint: str, host: str, port: int, *, on_ready: Callable[[], None] | None = None) -> None:
    """Serve the web view of the plant publishing at `endpoint` until interrupted."""
    app = make_app(Bridge(endpoint))

    async def ready(app: web.Application) -> None:  # noqa: ARG001
        if on_ready is not None:
            on_ready()

    app.on_startup.append(ready)
    web.run_app(app, host=host, port=port, print=None, handle_signals=True)

"""``streamctl venue databento``: serve DBN files over the gateway protocol until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import os
from typing import Any

import click

from streamctl.ingest.vendors.databento.venue.server import DatabentoVenue
from streamctl.ingest.venue_cli import parse_speed, serve_until_signal

__all__ = ["command", "main_serve"]


def main_serve(files: list[str], **settings: Any) -> None:
    """Blocking entry of ``streamctl venue databento``: serve until SIGINT or SIGTERM.

    `settings` are the keyword arguments of `DatabentoVenue`; the default port is 13000,
    the real gateway's.
    """
    venue = DatabentoVenue(files, **{"port": 13000, **settings})
    venue.start()
    summary = ", ".join(f"{d.dataset} v{d.version}: {len(d.frames)} records" for d in venue.datasets.values())
    print(f"listening on {venue.host}:{venue.port} ({summary})", flush=True)
    serve_until_signal(venue.stop)


@click.command("databento")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=13000, show_default=True)
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="DBN file(s) to serve (repeat the option for several).")
@click.option("--speed", default="max", show_default=True, help="`max` or a multiple of real time.")
@click.option("--key", default=None, help="Accept only this API key (default: any well-formed key).")
@click.option("--heartbeat", type=click.FloatRange(min=0.1), default=30.0, show_default=True)
@click.option("--loop", is_flag=True, help="Serve the files again from the start when they end.")
@click.option("--close-at-end", is_flag=True, help="Close each session when the data ends (default: heartbeats).")
def command(host: str, port: int, data: tuple[str, ...], speed: str, key: str | None,
            heartbeat: float, loop: bool, close_at_end: bool) -> None:
    """Serve DBN FILES over Databento's live gateway protocol (CRAM, subscriptions, DBN stream)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    main_serve(list(data), host=host, port=port, api_key=key or os.environ.get("DATABENTO_API_KEY"), speed=parse_speed(speed),
               heartbeat_interval=heartbeat, loop=loop, close_at_end=close_at_end)

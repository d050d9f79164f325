"""``streamctl venue alpaca``: serve recorded files over Alpaca's stream until SIGINT or SIGTERM."""

from __future__ import annotations

import logging
import os

import click

from streamctl.ingest.vendors.alpaca.venue.injection import parse_injection
from streamctl.ingest.vendors.alpaca.venue.server import AlpacaVenue
from streamctl.ingest.venue_cli import parse_speed, serve_until_signal

__all__ = ["command"]


@click.command("alpaca")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True)
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="File(s) to serve: anything `streamctl replay` reads (repeat the option for several).")
@click.option("--speed", default="max", show_default=True, help="`max` or a multiple of real time.")
@click.option("--loop", is_flag=True, help="Serve the files again from the start when they end.")
@click.option("--key", default=None, help="Accept only this key id (default $APCA_API_KEY_ID, else any).")
@click.option("--secret", default=None, help="Accept only this secret (default $APCA_API_SECRET_KEY).")
@click.option("--auth-error", type=int, default=None, help="Refuse every auth with this Alpaca error code.")
@click.option("--connection-limit", type=click.IntRange(min=0), default=0, show_default=True,
              help="Authenticated connections at once (0: any); one more gets error 406.")
@click.option("--inject", "inject", multiple=True,
              help="A failure WHAT[:ARG]@N before data message N: disconnect, silence, malformed, unknown, "
                   "badfield, oversized, error:CODE, correct:M, cancel:M.")
def command(host: str, port: int, data: tuple[str, ...], speed: str, loop: bool, key: str | None,
            secret: str | None, auth_error: int | None, connection_limit: int, inject: tuple[str, ...]) -> None:
    """Serve FILES over Alpaca's market-data stream (stocks /v2/{iex,sip,delayed_sip}, crypto /v1beta3/crypto/us)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        injections = [parse_injection(text) for text in inject]
        venue = AlpacaVenue(list(data), host=host, port=port, key=key or os.environ.get("APCA_API_KEY_ID"),
                            secret=secret or os.environ.get("APCA_API_SECRET_KEY"), speed=parse_speed(speed), loop=loop,
                            injections=injections, auth_error=auth_error, connection_limit=connection_limit)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    venue.start()
    stream = venue.serving.stream
    print(f"listening on {venue.host}:{venue.port} ({len(stream.items)} messages, symbols "
          f"{', '.join(stream.symbols)})", flush=True)
    serve_until_signal(venue.stop)

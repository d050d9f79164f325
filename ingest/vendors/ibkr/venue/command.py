"""``streamctl venue ibkr``: serve recorded files over the TWS API protocol until SIGINT or SIGTERM."""

from __future__ import annotations

import logging

import click

from streamctl.ingest.vendors.ibkr import protocol as api
from streamctl.ingest.vendors.ibkr.venue.connection import Failure
from streamctl.ingest.vendors.ibkr.venue.server import IbkrVenue
from streamctl.ingest.venue_cli import parse_speed, serve_until_signal

__all__ = ["command"]

_FAILURES = ["disconnect", "silence", "competing", "outage-1101", "outage-1102", "malformed", "oversized"]


@click.command("ibkr")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=4002, show_default=True,
              help="4002 is IB Gateway's paper port.")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(exists=True, dir_okay=False),
              help="File(s) to serve, any format `streamctl replay` reads (repeat the option for several).")
@click.option("--speed", default="max", show_default=True, help="`max` or a multiple of real time.")
@click.option("--loop", is_flag=True, help="Play each subscription again from the start when it ends.")
@click.option("--server-version", type=click.IntRange(api.MIN_VERSION, api.MAX_VERSION), default=api.MAX_VERSION,
              show_default=True, help="Highest API version to answer.")
@click.option("--exchange", default="CME", show_default=True, help="Exchange of the futures contracts.")
@click.option("--fail", type=click.Choice(_FAILURES), default=None,
              help="Inject a failure after --after market-data messages.")
@click.option("--after", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--fail-connections", type=click.IntRange(min=1), default=None,
              help="Only the first N connections fail (default: every one).")
@click.option("--outage", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Seconds between 1100 and 1101/1102 for the outage failures.")
@click.option("--not-subscribed", multiple=True, help="Refuse market data for this symbol (10089 / 354).")
def command(host: str, port: int, data: tuple[str, ...], speed: str, loop: bool, server_version: int,
            exchange: str, fail: str | None, after: int, fail_connections: int | None, outage: float,
            not_subscribed: tuple[str, ...]) -> None:
    """Serve recorded FILES over the TWS / IB Gateway API protocol (contracts, tick-by-tick, depth)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    pace = parse_speed(speed)
    failure = Failure(fail, after=after, connections=fail_connections, outage=outage) if fail else None  # type: ignore[arg-type]
    try:
        venue = IbkrVenue(list(data), host=host, port=port, speed=pace, loop=loop, server_version=server_version,
                          failure=failure, not_subscribed=frozenset(not_subscribed), futures_exchange=exchange)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    venue.start()
    listed = ", ".join(f"{c.local_symbol} ({c.sec_type}{' ' + c.expiry if c.expiry else ''})"
                       for c in venue.tape.contracts.values())
    print(f"listening on {venue.host}:{venue.port} (API {api.MIN_VERSION}..{server_version}; "
          f"{len(venue.tape.records)} records; {listed})", flush=True)
    serve_until_signal(venue.stop)

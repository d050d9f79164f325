"""The `streamctl` command line: up, down, status, tail, web, plot, keys, validate, clean, replay, venue."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported where used: `replay` launches its forkserver only once this module is loaded
    from streamctl.cli.config import FeedsMode, PlantConfig

__all__ = ["main", "cli"]

log = logging.getLogger("streamctl")

EXIT_CONFIG = 2
"""Exit code for a refused config or bad usage (nothing was started)."""
EXIT_FAILED = 1

_WEB_LISTEN = "127.0.0.1:8765"


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("streamctl")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _show_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`--version`: the installed version, looked up only when asked for."""
    if value and not ctx.resilient_parsing:
        click.echo(f"streamctl, version {_version()}")
        ctx.exit()


def _load(path: str, feeds: FeedsMode = "check") -> PlantConfig:
    """Load a config or exit 2 with the one-line error (no traceback)."""
    from streamctl.cli.config import ConfigError, load_config

    try:
        return load_config(path, feeds=feeds)
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True, callback=_show_version,
              help="Show the version and exit.")
def cli() -> None:
    """streamctl: a market-data plant. Vendor feeds -> shared-memory rings -> bar, VWAP, indicator,
    anomaly and book workers -> ZeroMQ topics."""


# ---------------------------------------------------------------------------------------------- up
@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.option("--detach", is_flag=True, help="Return once the plant is ready and leave it running.")
@click.option("--duration", type=click.FloatRange(min=0), default=None, help="Stop by itself after SECONDS.")
@click.option("--no-view", is_flag=True, help="No live table in the foreground (log lines only).")
@click.option("--ready-timeout", type=click.FloatRange(min=1), default=None,
              help="Seconds to wait for every process to report ready (default: `supervision.ready_timeout`).")
@click.option("--web", "web_listen", is_flag=False, flag_value=_WEB_LISTEN, default=None, metavar="[HOST:PORT]",
              help=f"Also serve the live web view (`streamctl web`), on {_WEB_LISTEN} unless given.")
def up(config: str, detach: bool, duration: float | None, no_view: bool, ready_timeout: float | None,
       web_listen: str | None) -> None:
    """Start the plant described by CONFIG (foreground with a live view; Ctrl-C stops it cleanly)."""
    cfg = _load(config)
    if ready_timeout is None:
        ready_timeout = cfg.supervision.ready_timeout
    if web_listen is not None:
        _listen_or_exit(web_listen, "--web", allow_remote=False)
    if detach:
        sys.exit(_detach(config, cfg, duration, ready_timeout, web_listen))
    _setup_logging()
    from streamctl.cli.progress import StartProgress
    from streamctl.cli.status import render_table
    from streamctl.cli.supervisor import PlantError, RestartPolicy, Supervisor

    sup = Supervisor(cfg, config_path=config,
                     policy=RestartPolicy.from_config(cfg.supervision, ready_timeout=ready_timeout))
    sup.install_signal_handlers()
    tty = sys.stdout.isatty() and not no_view
    last_plain = [0.0]
    web_proc: subprocess.Popen | None = None

    def show() -> None:
        if no_view:
            return
        if tty:
            click.echo("\x1b[H\x1b[2J" + render_table(sup.status()) + "\n\nCtrl-C to stop", nl=True)
        elif time.monotonic() - last_plain[0] >= 10:
            last_plain[0] = time.monotonic()
            click.echo(render_table(sup.status()))
    try:
        starting = StartProgress(cfg.name, sys.stderr, tty=sys.stderr.isatty())
        try:
            sup.start(on_wait=starting.waiting)
        finally:
            starting.finish()
        click.echo(f"plant {cfg.name} ready: subscribe at {cfg.publish.endpoint}", err=True)
        if web_listen is not None:
            web_proc = subprocess.Popen([sys.executable, "-m", "streamctl.cli", "web", "--endpoint",
                                         cfg.publish.endpoint, "--listen", web_listen], stdin=subprocess.DEVNULL)
            click.echo(f"web view at http://{web_listen}/", err=True)
        sup.run(duration=duration, on_tick=show)
    except PlantError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except Exception as exc:
        from streamctl.shm.segments import SegmentError

        if not isinstance(exc, SegmentError | OSError):
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        if web_proc is not None:
            web_proc.terminate()
            web_proc.wait(10)
        sup.stop()  # idempotent; runs on every path out, sys.exit included
    click.echo(f"plant {cfg.name} stopped", err=True)


def _detach(config: str, cfg: PlantConfig, duration: float | None, ready_timeout: float,
            web_listen: str | None) -> int:
    from streamctl.cli.runtime import read_manifest, run_dir
    from streamctl.shm.segments import process_alive

    log_path = run_dir() / f"{cfg.name}.log"
    args = [sys.executable, "-m", "streamctl.cli", "up", config, "--no-view", "--ready-timeout", str(ready_timeout)]
    if duration is not None:
        args += ["--duration", str(duration)]
    if web_listen is not None:
        args += ["--web", web_listen]
    env = dict(os.environ, STREAMCTL_LOG_FILE=str(log_path))
    with open(log_path, "ab") as out:
        this_run = out.tell()  # the log accumulates across runs: show only what this one wrote
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                start_new_session=True)
    deadline = time.monotonic() + ready_timeout + 10
    while time.monotonic() < deadline:
        code = proc.poll()
        manifest = read_manifest(cfg.name)
        if manifest and manifest.get("supervisor_pid") == proc.pid and manifest.get("state") == "ready":
            click.echo(f"plant {cfg.name} ready (supervisor pid {proc.pid}); subscribe at {cfg.publish.endpoint}; "
                       f"log {log_path}; stop with `streamctl down --name {cfg.name}`")
            return 0
        if code is not None:
            tail = _tail_file(log_path, 10, start=this_run)
            click.echo(f"error: plant {cfg.name} did not start (exit code {code}); log {log_path}:\n{tail}", err=True)
            return code or EXIT_FAILED
        time.sleep(0.05)
    if process_alive(proc.pid):
        os.kill(proc.pid, signal.SIGTERM)
    click.echo(f"error: plant {cfg.name} not ready within {ready_timeout:.0f} s; log {log_path}", err=True)
    return EXIT_FAILED


def _tail_file(path: Path, lines: int, *, start: int) -> str:
    """The last `lines` lines of `path` from byte `start` on."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


# ---------------------------------------------------------------------------------------------- find a plant
def _find_plant(name: str | None) -> dict:
    from streamctl.cli.runtime import running_plants

    plants = running_plants()
    if name is not None:
        for manifest in plants:
            if manifest["name"] == name:
                return manifest
        click.echo(f"error: no plant named `{name}` is running", err=True)
        sys.exit(EXIT_FAILED)
    if not plants:
        click.echo("error: no plant is running (start one with `streamctl up CONFIG`)", err=True)
        sys.exit(EXIT_FAILED)
    if len(plants) > 1:
        names = ", ".join(m["name"] for m in plants)
        click.echo(f"error: several plants are running ({names}); choose one with --name", err=True)
        sys.exit(EXIT_CONFIG)
    return plants[0]


# ---------------------------------------------------------------------------------------------- down
@cli.command()
@click.option("--name", default=None, help="Plant name (needed when several run).")
@click.option("--timeout", type=click.FloatRange(min=1), default=60.0, show_default=True)
def down(name: str | None, timeout: float) -> None:
    """Stop a running plant cleanly: feeds stop, workers drain and flush, every segment is removed."""
    from streamctl.cli.runtime import running_plants, supervisor_alive

    if name is None and not running_plants():
        click.echo("no plant is running")
        return
    manifest = _find_plant(name)
    pid = manifest["supervisor_pid"]
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while supervisor_alive(manifest) and time.monotonic() < deadline:
        time.sleep(0.05)
    if supervisor_alive(manifest):
        click.echo(f"supervisor {pid} did not stop within {timeout:.0f} s; killing the plant", err=True)
        _kill_tree(pid)
        _clean(manifest["name"])
    click.echo(f"plant {manifest['name']} stopped")


def _kill_tree(pid: int) -> None:
    import psutil

    try:
        parent = psutil.Process(pid)
        procs = parent.children(recursive=True) + [parent]
    except psutil.NoSuchProcess:
        return
    for proc in procs:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=5)


# ---------------------------------------------------------------------------------------------- status
@cli.command()
@click.option("--name", default=None, help="Plant name (needed when several run).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object.")
def status(name: str | None, as_json: bool) -> None:
    """Per process: role, pid, core, restarts, rates, drops by cause, ring fill, lag, RSS, USS, CPU%."""
    from streamctl.cli.status import collect_status, render_table

    manifest = _find_plant(name)
    snapshot = collect_status(manifest)
    click.echo(json.dumps(snapshot, indent=2) if as_json else render_table(snapshot))


# ---------------------------------------------------------------------------------------------- tail
@cli.command()
@click.argument("topics", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line: `topic` and every payload field.")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Exit after N messages.")
@click.option("--timeout", type=click.FloatRange(min=0), default=None, help="Exit after SECONDS.")
@click.option("--name", default=None, help="Plant name (needed when several run).")
@click.option("--endpoint", default=None, help="Connect here instead of a running plant's endpoint.")
@click.option("--curve-server-key", type=click.Path(dir_okay=False), default=None,
              help="The plant's public key file (`NAME.key`), when its endpoint uses CURVE (`publish.curve`).")
@click.option("--curve-client-key", type=click.Path(dir_okay=False), default=None,
              help="Your secret key file (`NAME.key_secret`), whose public key the plant allows.")
@click.option("--since", default=None, metavar="DURATION",
              help="First print what the plant published in the last DURATION (`90s`, `10m`, `1h`), then go on live.")
@click.option("--last", is_flag=True, help="First print the last message of each topic (current state), then go on live.")
@click.option("--recovery", default=None, help="The plant's recovery endpoint (default: the running plant's, "
              "or the endpoint's port + 1).")
def tail(topics: tuple[str, ...], as_json: bool, count: int | None, timeout: float | None, name: str | None,
         endpoint: str | None, curve_server_key: str | None, curve_client_key: str | None, since: str | None,
         last: bool, recovery: str | None) -> None:
    """Print messages of TOPICS (exact topics like `bar.60s.AAPL`, or prefixes ending in `.` or `*`)."""
    from streamctl.bus.curve import load_client
    from streamctl.cli.tailing import tail_topics

    if (curve_server_key is None) != (curve_client_key is None):
        click.echo("error: `--curve-server-key` and `--curve-client-key` go together", err=True)
        sys.exit(EXIT_CONFIG)
    try:
        curve = None if curve_server_key is None else load_client(curve_server_key, curve_client_key or "")
        if endpoint is None:
            plant = _find_plant(name)
            endpoint = plant["endpoint"]
            recovery = recovery or plant.get("recovery")
        since_dt = None
        if since is not None:
            from datetime import UTC, datetime, timedelta

            from streamctl.process.calc.settings import parse_interval

            try:
                seconds = parse_interval(since)
            except ValueError as exc:
                raise ValueError(f"`--since` {exc}") from None
            since_dt = datetime.now(UTC) - timedelta(seconds=seconds)
        tail_topics(endpoint, list(topics), as_json=as_json, count=count, timeout=timeout, out=sys.stdout,
                    err=sys.stderr, curve=curve, since=since_dt, last=last, recovery=recovery)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)
    except TimeoutError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # `streamctl tail ... | head`
        sys.stderr.close()


# ---------------------------------------------------------------------------------------------- web
def _listen_or_exit(listen: str, option: str, *, allow_remote: bool) -> tuple[str, int]:
    from streamctl.cli.config import parse_listen

    try:
        return parse_listen(listen, allow_remote=allow_remote)
    except ValueError as exc:
        hint = " (`--allow-remote`)" if "loopback" in str(exc) and option == "--listen" else ""
        click.echo(f"error: `{option}` {exc}{hint}; was {listen}", err=True)
        sys.exit(EXIT_CONFIG)


@cli.command()
@click.option("--name", default=None, help="Plant name (needed when several run).")
@click.option("--endpoint", default=None, help="Subscribe here instead of a running plant's endpoint.")
@click.option("--listen", default=_WEB_LISTEN, show_default=True, metavar="HOST:PORT", help="Where to serve the page.")
@click.option("--allow-remote", is_flag=True, help="Allow a `--listen` host other than loopback (no auth!).")
def web(name: str | None, endpoint: str | None, listen: str, allow_remote: bool) -> None:
    """Serve a live web view of a plant: processes, candles per symbol and interval, trades, book."""
    from streamctl.web.server import serve

    host, port = _listen_or_exit(listen, "--listen", allow_remote=allow_remote)
    if endpoint is None:
        endpoint = _find_plant(name)["endpoint"]
    _setup_logging()
    try:
        serve(endpoint, host, port, on_ready=lambda: click.echo(f"web view at http://{listen}/ (plant at {endpoint})",
                                                                err=True))
    except OSError as exc:
        click.echo(f"error: cannot serve at {listen}: {exc.strerror or exc}", err=True)
        sys.exit(EXIT_FAILED)
    except ValueError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_CONFIG)


# ---------------------------------------------------------------------------------------------- plot
@cli.command()
@click.argument("bars", type=click.Path(exists=True, dir_okay=False))
@click.option("--symbol", required=True, help="The symbol to draw.")
@click.option("--interval", required=True, help="Bar interval as in the topics: 1s, 60s (or 1m), 100t, ...")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The HTML file to write.")
def plot(bars: str, symbol: str, interval: str, out: str) -> None:
    """Write a self-contained interactive candlestick chart (volume, VWAP, anomalies) from BARS
    (`replay --out` output: .jsonl or .parquet)."""
    from streamctl.cli.plot import plot_file

    try:
        result = plot_file(bars, out, symbol=symbol, interval=interval)
    except (ValueError, OSError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if result.skipped:
        click.echo(f"skipped {result.skipped} bad row(s); first: {result.first_error}", err=True)
    click.echo(f"{out}: {result.bars} candles, {result.anomalies} anomalies")


# ---------------------------------------------------------------------------------------------- keys
@cli.command()
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Where to write NAME.key (public) and NAME.key_secret (secret, mode 0600).")
def keys(name: str, directory: str) -> None:
    """Make a CURVE keypair for `publish.curve` (the plant's) or for a subscriber (`tail --curve-*`)."""
    import zmq.auth

    target = Path(directory)
    if not name or "/" in name or name.startswith("."):
        click.echo(f"error: `NAME` must be a file name without '/', was {name!r}", err=True)
        sys.exit(EXIT_CONFIG)
    existing = [p for p in (target / f"{name}.key", target / f"{name}.key_secret") if p.exists()]
    if existing:
        click.echo(f"error: {existing[0]} exists; remove it or choose another NAME", err=True)
        sys.exit(EXIT_CONFIG)
    umask = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
    try:
        target.mkdir(parents=True, exist_ok=True)
        public, secret = zmq.auth.create_certificates(target, name)
        os.chmod(public, 0o644)
    except OSError as exc:
        click.echo(f"error: cannot write keys in {target}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    finally:
        os.umask(umask)
    click.echo(f"public key {public} (give it out); secret key {secret} (keep it)")


# ---------------------------------------------------------------------------------------------- validate
@cli.command()
@click.argument("config", type=click.Path(dir_okay=False))
def validate(config: str) -> None:
    """Check CONFIG without starting anything (exit 0, or 2 with the error)."""
    cfg = _load(config)
    feeds = ", ".join(f"{f.name} ({f.vendor})" for f in cfg.feeds)
    click.echo(f"ok: plant {cfg.name}: feeds {feeds}; {cfg.partitions.count} partition(s); "
               f"publish {cfg.publish.endpoint}")


# ---------------------------------------------------------------------------------------------- clean
@cli.command()
@click.option("--name", default=None, help="Only this plant's leftovers.")
def clean(name: str | None) -> None:
    """Remove what dead plants left behind: segments, manifests, sockets (never what a live process uses)."""
    removed, kept = _clean(name)
    click.echo("\n".join(f"removed {item}" for item in removed) if removed else "nothing to clean")
    if kept:
        click.echo("\n".join(f"error: kept {item}" for item in kept), err=True)
        sys.exit(EXIT_FAILED)


def _clean(name: str | None) -> tuple[list[str], list[str]]:
    """Remove the leftovers of dead plants; returns (removed, kept and why)."""
    from streamctl.cli.runtime import read_manifest, remove_manifest, run_dir, stale_sockets, supervisor_alive
    from streamctl.shm.segments import orphaned, sweep

    removed = [f"/dev/shm/{seg}" for seg in sweep(name)]
    in_use = orphaned(name)  # creator dead, users alive: an orphaned plant's children
    kept = [f"/dev/shm/{seg}: its plant's supervisor is dead but pid(s) {', '.join(map(str, sorted(pids)))} "
            "still use it; stop them, then clean again" for seg, pids in in_use.items()]
    for path in run_dir().glob("*.json"):
        manifest = read_manifest(path.stem)
        if name is not None and path.stem != name:
            continue
        if not supervisor_alive(manifest) and not (in_use and orphaned(path.stem)):
            remove_manifest(path.stem)
            removed.append(str(path))
    for sock in stale_sockets(name):
        sock.unlink(missing_ok=True)
        removed.append(str(sock))
    return removed, kept


# ---------------------------------------------------------------------------------------------- replay
@cli.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--config", "config_path", default=None, type=click.Path(dir_okay=False),
              help="Calculators (and partitions) from this config; default: those of configs/demo.yaml.")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Write every data message to .jsonl (one JSON object a line) or .parquet.")
@click.option("--symbols", default=None, help="Comma-separated symbols to replay (default: all).")
def replay(files: tuple[str, ...], config_path: str | None, out: str | None, symbols: str | None) -> None:
    """Run the plant's exact pipeline over recorded FILES (DBN, CSV, Parquet) and exit when done."""
    from streamctl.cli import forkserver

    forkserver.start(vendors=["replay"], live=False)  # preloads on the other core while this process gets ready
    from streamctl.cli.progress import ReplayProgress
    from streamctl.cli.replaying import run_replay

    _setup_logging()
    cfg = _load(config_path, feeds="ignore") if config_path else _bundled_demo()
    try:
        summary = run_replay(cfg, list(files), out=out, symbols=symbols.split(",") if symbols else None,
                             progress=ReplayProgress(sys.stderr, tty=sys.stderr.isatty()))
    except (ValueError, OSError, RuntimeError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(summary, err=True)


def _bundled_demo() -> PlantConfig:
    from importlib import resources

    from streamctl.cli.config import parse_config

    text = resources.files("streamctl.configs").joinpath("demo.yaml").read_text()
    return parse_config(text, source="configs/demo.yaml")


# ---------------------------------------------------------------------------------------------- venue
class _VenueGroup(click.Group):
    """One ``streamctl venue <name>`` per registered vendor that has a local venue, imported only
    when asked for: the venues' servers (and the kernels some of them load) cost every other
    command a third of a second of imports."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        from streamctl.ingest.vendors import VENDORS

        return [spec.name for spec in VENDORS.values() if spec.venue is not None]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        from streamctl.ingest.vendors import VENDORS

        spec = VENDORS.get(cmd_name)
        return None if spec is None else spec.venue_command()


@cli.group(cls=_VenueGroup)
def venue() -> None:
    """Local vendor gateways for offline testing (loopback only)."""


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="streamctl")


if __name__ == "__main__":  # pragma: no cover
    main()

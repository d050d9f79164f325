"""Typed plant configuration, decoded from YAML and validated before anything starts.

The config is a tree of frozen msgspec Structs. A bad file is refused with one line naming
the field path, the value and the line: "`feeds[0].vendor` must be one of sim, replay,
databento; was no_such_vendor (configs/x.yaml line 7)". ``${ENV_VAR}`` in any string is
replaced from the environment; an interpolated value is never echoed in an error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import yaml
from msgspec import Meta

from streamctl.bus.recovery import RecoveryConfig, recovery_endpoint
from streamctl.bus.wire import parse_topic
from streamctl.ingest.vendor_api import FEED_NAME, FeedConfig
from streamctl.process.calc.settings import CalculatorsConfig, parse_interval
from streamctl.process.journal.settings import JournalConfig
from streamctl.shm.doorbell import MAX_WAIT_WORDS
from streamctl.shm.registry import symbol_problem
from streamctl.sinks.settings import SECRET_FIELDS, STORED_KINDS, SinkConfig

__all__ = [
    "ConfigError",
    "FeedsMode",
    "PlantConfig",
    "FeedConfig",
    "PartitionsConfig",
    "PublishConfig",
    "CurveConfig",
    "RingsConfig",
    "SupervisionConfig",
    "MetricsConfig",
    "parse_listen",
    "load_config",
    "parse_config",
    "data_dir",
    "history_dir",
]

_NAME = FEED_NAME  # a plant name follows the feed-name rule: both name segments and processes
_POS_INT = Annotated[int, Meta(ge=1)]


class ConfigError(ValueError):
    """A config was refused. ``str(err)`` is the one line shown to the user."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None):
        super().__init__(message)
        self.path = path
        self.line = line


class _Cfg(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


MAX_PARTITIONS = 256
"""Each partition is a worker process; more than this on one host is a typo, not a plan."""
MAX_LINGER_MS = 50.0
"""`PartitionsConfig.linger_ms` at most: longer is a delay, not a batching window."""
MAX_FEEDS = MAX_WAIT_WORDS
"""A worker sleeps on one ring per feed with one `futex_waitv`, which takes at most 128."""


class PartitionsConfig(_Cfg, frozen=True):
    count: Annotated[int, Meta(ge=1, le=MAX_PARTITIONS)] = 1
    """Worker processes; each symbol belongs to one partition (stable CRC-32 of the symbol)."""
    cpus: list[Annotated[int, Meta(ge=0)]] | None = None
    """Cores for the workers, in order of the owned partitions; ``null`` spreads them."""
    own: list[Annotated[int, Meta(ge=0)]] | None = None
    """The partitions this plant runs (``null``: all). Several hosts each owning some of the same
    `count` split the symbol universe: a symbol is handled only where its partition is owned."""
    linger_ms: Annotated[float, Meta(ge=0, le=MAX_LINGER_MS)] = 0.0
    """After a batch, a live worker lets the next one gather this long before it reads again
    (0: it reads as soon as a feed writes). The first record after a quiet spell still goes at
    once, and a read that leaves a full batch waiting does not linger. Fewer, larger batches cost
    far less CPU at live rates (every hand-over between processes wakes one), at up to this much
    latency; the rings must hold what a feed writes meanwhile (`rings.capacity`)."""


class CurveConfig(_Cfg, frozen=True):
    """ZeroMQ CURVE on the public endpoint: only subscribers holding an allowed key get in."""

    server_secret_key: str
    """The plant's `.key_secret` file (`streamctl keys NAME`); subscribers get its `.key` file."""
    client_public_keys: str
    """A directory of the allowed subscribers' public `*.key` files."""


class PublishConfig(_Cfg, frozen=True):
    endpoint: str = "tcp://127.0.0.1:5555"
    """The one endpoint subscribers connect to (an XPUB bound by the plant's proxy)."""
    raw_trades: bool = True
    raw_quotes: bool = True
    sndhwm: Annotated[int, Meta(ge=0)] = 100_000
    """Per-subscriber high-water mark at the public endpoint (messages)."""
    curve: CurveConfig | None = None
    """Off by default (loopback); set it when subscribers connect from other hosts."""
    recovery: RecoveryConfig = RecoveryConfig()
    """The recovery service: recent history and last values per topic (docs/wire.md, "Recovery")."""


class RingsConfig(_Cfg, frozen=True):
    capacity: Annotated[int, Meta(ge=64, le=1 << 26)] = 1 << 16
    """Records per ring; must be a power of two."""
    overflow: Literal["drop", "block"] = "drop"
    """``drop``: the producer never waits, what does not fit is counted. ``block``: it waits."""


class SupervisionConfig(_Cfg, frozen=True):
    heartbeat_timeout: Annotated[float, Meta(gt=0)] = 10.0
    """A ready process whose heartbeat is older than this many seconds is killed and restarted."""
    max_restarts: Annotated[int, Meta(ge=1)] = 5
    """A process dying this many times within `restart_window` seconds is marked failed."""
    restart_window: Annotated[float, Meta(gt=0)] = 30.0
    first_restart_delay: Annotated[float, Meta(ge=0)] = 0.2
    """Restart backoff: this delay, doubled per recent death, at most `max_restart_delay`."""
    max_restart_delay: Annotated[float, Meta(ge=0)] = 5.0
    ready_timeout: Annotated[float, Meta(gt=0)] = 300.0
    """Seconds every process gets to report ready at start (the first start on a machine
    compiles the numba kernels: one to two minutes on 2 cores)."""


class MetricsConfig(_Cfg, frozen=True):
    """The supervisor's Prometheus endpoint (`docs/metrics.md`)."""

    listen: str = "127.0.0.1:9464"
    """HOST:PORT of the HTTP server whose ``/metrics`` Prometheus scrapes."""
    allow_remote: bool = False
    """A `listen` host other than loopback is refused unless this is true (the endpoint has no auth)."""


def parse_listen(text: str, *, allow_remote: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); refuses a non-loopback host unless `allow_remote`."""
    import ipaddress

    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("must be HOST:PORT with a port in 1..65535")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not allow_remote:
        raise ValueError("must be a loopback address (127.0.0.1, ::1, localhost) unless remote access is allowed")
    return host, int(port)


class PlantConfig(_Cfg, frozen=True):
    name: _NAME
    feeds: Annotated[list[FeedConfig], Meta(max_length=MAX_FEEDS)]
    """At least one, except in a config read with ``feeds="ignore"`` (`streamctl replay --config`)."""
    partitions: PartitionsConfig = PartitionsConfig()
    calculators: CalculatorsConfig = CalculatorsConfig()
    publish: PublishConfig = PublishConfig()
    rings: RingsConfig = RingsConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    journal: JournalConfig = JournalConfig()
    metrics: MetricsConfig | None = None
    """Off unless set (``metrics: {}`` serves on 127.0.0.1:9464): two plants on a host need two ports."""
    sinks: list[SinkConfig] = msgspec.field(default_factory=list)
    """Stores fed as subscribers (`streamctl.sinks`), each a supervised process."""

    def vendor_options(self, feed: FeedConfig) -> Any:
        """The typed options of one feed (already validated at load)."""
        from streamctl.ingest.vendors import vendor_spec

        return msgspec.convert(feed.options, vendor_spec(feed.vendor).options)



def data_dir(config: PlantConfig, environ: dict[str, str] | None = None) -> Path:
    """The plant's data directory: ``journal.dir``, else ``$XDG_DATA_HOME/streamctl/<name>``
    (``~/.local/share/streamctl/<name>`` when XDG_DATA_HOME is unset): never the working tree."""
    if config.journal.dir is not None:
        return Path(config.journal.dir).expanduser().absolute()
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "streamctl" / config.name


def history_dir(config: PlantConfig) -> Path | None:
    """Where a live plant's hub keeps its output journal (``<data dir>/history``), or None when
    it keeps none: no recovery service, or ``history.enabled`` (null: ``journal.enabled``) off."""
    recovery = config.publish.recovery
    enabled = recovery.history.enabled if recovery.history.enabled is not None else config.journal.enabled
    return data_dir(config) / "history" if recovery.enabled and enabled else None


# --------------------------------------------------------------------------- loading

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_AT_PATH = re.compile(r"\s*- at `\$(.*)`$", re.DOTALL)


FeedsMode = Literal["check", "ignore"]
"""``ignore``: the config lends everything but its feeds (`streamctl replay --config` brings its
own), so its ``feeds`` section is neither interpolated nor validated and comes back empty."""


def load_config(path: str | os.PathLike[str], *, environ: dict[str, str] | None = None,
                feeds: FeedsMode = "check") -> PlantConfig:
    """Read, interpolate and validate a YAML config file; raise `ConfigError` on any problem."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from None
    return parse_config(text, source=str(path), environ=environ, feeds=feeds)


def parse_config(text: str, *, source: str = "<config>", environ: dict[str, str] | None = None,
                 feeds: FeedsMode = "check") -> PlantConfig:
    """Validate YAML text; `source` names the file in error messages."""
    environ = dict(os.environ) if environ is None else environ
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config is {len(text):,} bytes; a plant config is at most {MAX_CONFIG_BYTES:,} ({source})")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        expanded = _expanded_size(node)
        if expanded > MAX_CONFIG_VALUES:
            raise ConfigError(f"config expands to more than {MAX_CONFIG_VALUES:,} values through YAML aliases "
                              f"({source})")
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" ({source} line {mark.line + 1})" if mark else f" ({source})"
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line, always
        raise ConfigError(f"config is not valid YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config must be a mapping of sections ({source})")
    if feeds == "ignore":
        data["feeds"] = []
    secret_paths: set[str] = set()
    data = _interpolate(data, environ, "", secret_paths, node, source)

    def fail(path: str, message: str, value: Any = _MISSING) -> ConfigError:
        line = _line_of(node, path)
        where = f" ({source} line {line})" if line else f" ({source})"
        shown = ""
        if value is not _MISSING:
            shown = "; was " + ("<from environment>" if path in secret_paths else _show(value))
        return ConfigError(f"`{_printable(path) or '$'}` {_printable(message)}{shown}{where}", path=path, line=line)

    try:
        config = msgspec.convert(data, PlantConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise fail(*_describe_validation(exc, data)) from None
    if feeds == "check" and not config.feeds:
        raise fail("feeds", "must list at least one feed", data.get("feeds", []))
    _check_semantics(config, data, fail)
    _check_sinks(config, secret_paths, fail)
    return config


_MISSING = object()

MAX_CONFIG_BYTES = 1 << 20
MAX_CONFIG_VALUES = 100_000
"""A config whose aliases expand past this many values is refused before it is built (an alias
"bomb" of a few hundred bytes would otherwise take minutes and gigabytes)."""


def _expanded_size(node: yaml.Node | None) -> int:
    """How many values `node` stands for once every alias is expanded (shared nodes counted once
    per use, computed once per node)."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node) -> int:
        known = sizes.get(id(n))
        if known is not None:
            return known
        sizes[id(n)] = 1  # a recursive alias counts once, it does not loop
        if isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(key) + size(value) for key, value in n.value)
        else:
            total = 1
        total = min(total, MAX_CONFIG_VALUES + 1)
        sizes[id(n)] = total
        return total

    return 0 if node is None else size(node)


_SHOWN_CHARS = 120


def _show(value: Any) -> str:
    """A value as one line of an error: strings as they are (escaped if not printable), other
    values in YAML flow style; long ones cut with an ellipsis."""
    if isinstance(value, str):
        text = value if value and value.isprintable() else repr(value)
    else:
        flow = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
        text = " ".join(flow.strip().removesuffix("...").split())
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 1] + "\u2026"


def _printable(text: str) -> str:
    """`text` with each unprintable character escaped, so a key or value from a config (which may
    hold newlines or control bytes) cannot break the error's one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _describe_validation(exc: msgspec.ValidationError, data: Any) -> tuple[str, str, Any]:
    """(field path, message, offending value or `_MISSING`) of a msgspec validation error."""
    message = str(exc)
    match = _AT_PATH.search(message)
    raw_path = match.group(1) if match else ""
    path = raw_path.lstrip(".")
    text = message[: match.start()] if match else message
    missing = re.fullmatch(r"Object missing required field `(.+)`", text, re.DOTALL)
    if missing:
        return (f"{path}.{missing.group(1)}" if path else missing.group(1)), "is required", _MISSING
    unknown = re.fullmatch(r"Object contains unknown field `(.+)`", text, re.DOTALL)
    if unknown:
        return (f"{path}.{unknown.group(1)}" if path else unknown.group(1)), "is not a known field", _MISSING
    value = _lookup(data, path)
    text = text.replace("Expected", "must be").replace("`", "")
    text = re.sub(r", got .*$", "", text)
    return path, text[0].lower() + text[1:] if text else "is invalid", value


def _check_semantics(config: PlantConfig, data: dict, fail) -> None:
    """Rules a type cannot express."""
    from streamctl.ingest.vendors import VENDORS, vendor_spec

    names: set[str] = set()
    for i, feed in enumerate(config.feeds):
        if feed.vendor not in VENDORS:
            raise fail(f"feeds[{i}].vendor", f"must be one of {', '.join(VENDORS)}", feed.vendor)
        if feed.name in names:
            raise fail(f"feeds[{i}].name", "must be unique among feeds", feed.name)
        names.add(feed.name)
        seen: dict[str, int] = {}
        for j, symbol in enumerate(feed.symbols or []):
            problem = symbol_problem(symbol)
            if problem:
                raise fail(f"feeds[{i}].symbols[{j}]", problem, symbol)
            if symbol in seen:
                raise fail(f"feeds[{i}].symbols[{j}]", f"repeats feeds[{i}].symbols[{seen[symbol]}]", symbol)
            seen[symbol] = j
        spec = vendor_spec(feed.vendor)
        if spec.needs_symbols and not feed.symbols:
            raise fail(f"feeds[{i}].symbols", f"is required for vendor {feed.vendor} (a list of symbols)")
        try:
            options: Any = msgspec.convert(feed.options, spec.options, strict=False)
        except msgspec.ValidationError as exc:
            sub_path, msg, value = _describe_validation(exc, feed.options)
            full = f"feeds[{i}].options" + (f".{sub_path}" if sub_path else "")
            raise fail(full, msg, value) from None
        check = getattr(options, "check", None)
        if check is not None:
            problem = check()
            if problem:
                field, msg, value = problem
                raise fail(f"feeds[{i}].options.{field}", msg, value)
    capacity = config.rings.capacity
    if capacity & (capacity - 1):
        raise fail("rings.capacity", "must be a power of two", capacity)
    bars = config.calculators.bars
    for i, interval in enumerate(bars.time):
        try:
            parse_interval(interval)
        except ValueError as exc:
            raise fail(f"calculators.bars.time[{i}]", str(exc), interval) from None
    own = config.partitions.own
    if own is not None:
        if not own or len(set(own)) != len(own) or max(own) >= config.partitions.count:
            raise fail("partitions.own", f"must list distinct partitions in 0..{config.partitions.count - 1}", own)
    cpus = config.partitions.cpus
    owned = config.partitions.count if own is None else len(own)
    if cpus is not None and len(cpus) != owned:
        raise fail("partitions.cpus", f"must list {owned} cores (one per owned partition)", cpus)
    vwap = config.calculators.vwap
    if vwap is not None:
        try:
            import zoneinfo

            zoneinfo.ZoneInfo(vwap.timezone)
        except Exception:
            raise fail("calculators.vwap.timezone", "must be an IANA time zone", vwap.timezone) from None
    if config.metrics is not None:
        try:
            parse_listen(config.metrics.listen, allow_remote=config.metrics.allow_remote)
        except ValueError as exc:
            raise fail("metrics.listen", f"{exc} (`metrics.allow_remote: true`)"
                       if "loopback" in str(exc) else str(exc), config.metrics.listen) from None
    endpoint = config.publish.endpoint
    tcp = re.match(r"^tcp://[^:]+:(\d+)$", endpoint)
    if not (tcp or re.match(r"^ipc://.+$", endpoint)):
        raise fail("publish.endpoint", "must be tcp://HOST:PORT or ipc://PATH", endpoint)
    if tcp and not 1 <= int(tcp.group(1)) <= 65535:
        raise fail("publish.endpoint", "must have a port in 1..65535 (subscribers need a fixed port)", endpoint)
    recovery = config.publish.recovery
    if recovery.enabled:
        where = recovery_endpoint(endpoint, recovery.endpoint)
        rtcp = re.match(r"^tcp://[^:]+:(\d+)$", where)
        if not (rtcp or re.match(r"^ipc://.+$", where)) or (rtcp and not 1 <= int(rtcp.group(1)) <= 65535):
            raise fail("publish.recovery.endpoint", "must be tcp://HOST:PORT (port 1..65535) or ipc://PATH "
                       "(null: the public endpoint's port + 1)", where)
        if where == endpoint:
            raise fail("publish.recovery.endpoint", "must differ from publish.endpoint", where)
    history = recovery.history
    if history.max_bytes < 2 * history.file_bytes:
        raise fail("publish.recovery.history.max_bytes",
                   f"must be at least 2 x `file_bytes` ({2 * history.file_bytes})", history.max_bytes)
    journal_dir = config.journal.dir
    if journal_dir is not None:
        if not journal_dir.strip():
            raise fail("journal.dir", "must be a directory path (or null for the user's data directory)",
                       journal_dir)
        if Path(journal_dir).expanduser().exists() and not Path(journal_dir).expanduser().is_dir():
            raise fail("journal.dir", "must be a directory, not a file", journal_dir)
    curve = config.publish.curve
    if curve is not None:
        from streamctl.bus.curve import read_key, read_public_keys

        for field, check in (("server_secret_key", lambda path: read_key(path, secret=True)),
                             ("client_public_keys", read_public_keys)):
            path = getattr(curve, field)
            try:
                check(path)
            except ValueError as exc:
                raise fail(f"publish.curve.{field}", f"must name key files made by `streamctl keys` ({exc})",
                           path) from None


def _check_sinks(config: PlantConfig, secret_paths: set[str], fail) -> None:
    """Unique names, topics a sink can store, secrets only from the environment."""
    names: set[str] = set()
    for i, sink in enumerate(config.sinks):
        if sink.name in names:
            raise fail(f"sinks[{i}].name", "must be unique among sinks", sink.name)
        names.add(sink.name)
        for j, pattern in enumerate(sink.topics):
            kind = pattern.partition(".")[0]
            if kind not in STORED_KINDS:
                raise fail(f"sinks[{i}].topics[{j}]", f"must start with a stored kind ({', '.join(sorted(STORED_KINDS))})",
                           pattern)
            prefix = pattern.endswith((".", "*"))
            if not prefix:
                try:
                    parse_topic(pattern)
                except ValueError as exc:
                    raise fail(f"sinks[{i}].topics[{j}]", f"is not a topic nor a prefix ending in `.` or `*` ({exc})",
                               pattern) from None
        for field in SECRET_FIELDS:
            path = f"sinks[{i}].{field}"
            if getattr(sink, field, None) is not None and path not in secret_paths:
                raise fail(path, "must come from the environment (write `${VARIABLE}`), never the file")
    if config.sinks and config.publish.curve is not None:
        raise fail("sinks", "cannot subscribe to a `publish.curve` endpoint yet; remove `publish.curve` or the sinks")


def _interpolate(value: Any, environ: dict[str, str], path: str, secret: set[str], node, source: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, environ, f"{path}.{k}" if path else str(k), secret, node, source)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, environ, f"{path}[{i}]", secret, node, source) for i, v in enumerate(value)]
    if isinstance(value, str) and "${" in value:
        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in environ:
                line = _line_of(node, path)
                where = f" ({source} line {line})" if line else f" ({source})"
                raise ConfigError(f"`{path}` needs environment variable {name}, which is not set{where}",
                                  path=path, line=line)
            return environ[name]

        secret.add(path)
        return _ENV_REF.sub(sub, value)
    return value


def _parse_path(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        parts.append(int(index) if index else name)
    return parts


def _lookup(data: Any, path: str) -> Any:
    for part in _parse_path(path):
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return _MISSING
    return data


def _line_of(node: yaml.Node | None, path: str) -> int | None:
    """1-based line of the YAML node at `path` (or of its nearest existing parent)."""
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in _parse_path(path):
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, child in node.value:
                if key.value == part:
                    node = child
                    line = key.start_mark.line + 1
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line

"""The `sinks:` section and `partitions.own`: refused at load, naming the field."""

from __future__ import annotations

import pytest

from streamctl.cli.config import ConfigError, parse_config
from streamctl.cli.plan import Layout, owned_partitions, plan_processes, subscriber_endpoint
from streamctl.shm.stats import Role
from streamctl.sinks.settings import KafkaSink, PostgresSink, SqliteSink

BASE = """\
name: p
feeds: [{name: sim, vendor: sim, symbols: [AAPL]}]
"""


def _parse(extra: str, **environ: str):
    return parse_config(BASE + extra, source="x.yaml", environ=environ)


def test_sinks_decode_into_their_kind():
    cfg = _parse("""\
sinks:
  - {name: cache, kind: sqlite, path: a.db, topics: [bar.60s.]}
  - {name: db, kind: postgres, topics: [trade.AAPL], password: "${PGPASSWORD}"}
  - {name: log, kind: kafka, topics: ["bar.*"], partitions: 8}
""", PGPASSWORD="s3cret")
    cache, db, log = cfg.sinks
    assert isinstance(cache, SqliteSink) and cache.batch_rows == 5000
    assert isinstance(db, PostgresSink) and db.password == "s3cret"
    assert isinstance(log, KafkaSink) and log.partitions == 8
    assert cache.reconnect.max_failures >= 10  # the plant's reconnect policy, patient for stores


@pytest.mark.parametrize(("sink", "message"), [
    ("{name: x, kind: postgres, topics: [bar.], password: hunter2}",
     "`sinks[0].password` must come from the environment (write `${VARIABLE}`), never the file"),
    ("{name: x, kind: mongo, topics: [bar.]}", "`sinks[0].kind` invalid value 'mongo'"),
    ("{name: x, kind: redis, topics: [vwap.]}", "`sinks[0].topics[0]` must start with a stored kind"),
    ("{name: x, kind: redis, topics: [bar.60s]}", "`sinks[0].topics[0]` is not a topic nor a prefix"),
    ("{name: x, kind: redis, topics: []}", "`sinks[0].topics` must be array of length >= 1"),
    ("{name: x, kind: redis, topics: [bar.], port: 70000}", "`sinks[0].port` must be int <= 65535"),
    ("{name: x, kind: sqlite, topics: [bar.]}", "`sinks[0].path` is required"),
    ("{name: x, kind: kafka, topics: [bar.], colour: red}", "`sinks[0].colour` is not a known field"),
    ("{name: 'a b', kind: sqlite, path: a.db, topics: [bar.]}", "`sinks[0].name` must be str matching regex"),
])
def test_a_bad_sink_is_refused_naming_the_field(sink, message):
    with pytest.raises(ConfigError) as info:
        _parse(f"sinks:\n  - {sink}\n")
    assert message in str(info.value) and "x.yaml line 4" in str(info.value)
    assert "hunter2" not in str(info.value)


def test_sink_names_are_unique():
    with pytest.raises(ConfigError, match=r"`sinks\[1\].name` must be unique among sinks; was a"):
        _parse("sinks:\n  - {name: a, kind: sqlite, path: a.db, topics: [bar.]}\n"
               "  - {name: a, kind: sqlite, path: b.db, topics: [bar.]}\n")


@pytest.mark.parametrize("own", ["[]", "[0, 0]", "[4]"])
def test_owned_partitions_must_be_distinct_and_in_the_layout(own):
    with pytest.raises(ConfigError, match=r"`partitions.own` must list distinct partitions in 0..3"):
        _parse(f"partitions: {{count: 4, own: {own}}}\n")


def test_a_plant_owning_some_partitions_runs_only_their_workers_and_its_sinks():
    cfg = _parse("partitions: {count: 4, own: [3, 1]}\n"
                 "publish: {endpoint: 'tcp://0.0.0.0:6000'}\n"
                 "sinks:\n  - {name: a, kind: sqlite, path: a.db, topics: [bar.]}\n")
    assert owned_partitions(cfg) == [1, 3]
    layout = Layout.of(cfg)
    assert sorted(p for _, p in layout.rings) == [1, 3]
    plans = plan_processes(cfg, layout, (None, None), live=True)  # type: ignore[arg-type]
    assert [(p.name, p.role, p.slot) for p in plans] == [
        ("hub", Role.HUB, 0), ("sink-a", Role.SINK, 1), ("worker-1", Role.WORKER, 2), ("worker-3", Role.WORKER, 3),
        ("sim", Role.INGEST, 4)]
    feed = plans[-1].spec
    assert feed.own == [1, 3] and feed.partitions == 4 and len(feed.rings) == 2
    assert plans[1].spec.endpoint == "tcp://127.0.0.1:6000" == subscriber_endpoint("tcp://*:6000")

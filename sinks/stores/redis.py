"""Redis: a capped stream per topic (the record), PUBLISH per row (live), a hash of last values.

Per row of topic ``T`` (``bar.60s.AAPL``; every key and channel starts with `prefix`):

- ``XADD T MAXLEN ~ stream_maxlen <id> row <MessagePack map of the row>``: one field, the
  same map as everywhere on the plant's wire (a field per column costs Python four times as
  much to send). The entry id is made from the row's natural order, so writing a row again
  is refused by Redis itself (an id must grow): bars ``<ts_start ms>-<ts_start sub-ms ns>``,
  others ``<ts_recv ms>-<seq>``;
- ``PUBLISH T <the same MessagePack map>``, only for rows the stream took (a retried batch
  is not published twice);
- ``HSET last:T column value ...`` with the newest row of ``T`` in the batch (readable with
  ``redis-cli HGETALL``).

A batch is two pipelines (XADD, then PUBLISH and HSET). A connection lost in between leaves
the rows in the streams and their PUBLISH not sent; the retry finds them held.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streamctl.sinks.rows import TABLE_OF_KIND, TABLES, Row, Table
from streamctl.sinks.settings import RedisSink
from streamctl.sinks.stores import Held, StoreDown, require

__all__ = ["RedisStore", "make", "entry_id"]

_DUPLICATE = "equal or smaller than the target stream top item"


def entry_id(table: Table, row: Row) -> str:
    """The stream entry id of `row`: grows with the row's order within its topic."""
    if table.kind == "bar":
        start = int(row[table.index("ts_start")])
        return f"{start // 1_000_000}-{start % 1_000_000}"
    return f"{int(row[table.index('ts_recv')]) // 1_000_000}-{int(row[table.index('seq')])}"


class RedisStore:
    """Rows into Redis (see the module docstring)."""

    def __init__(self, config: RedisSink):
        self.config = config
        self._redis: Any = require("redis", "redis", "redis")
        self._client: Any = None
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(dict[str, Any]).decode
        self._names = {t: t.names for t in TABLES}

    def open(self) -> None:
        c = self.config
        client = self._redis.Redis(host=c.host, port=c.port, db=c.db, password=c.password, socket_timeout=10,
                                   socket_connect_timeout=5)
        try:
            client.ping()
        except self._redis.RedisError as exc:
            client.close()
            raise StoreDown(f"cannot reach Redis at {c.host}:{c.port}: {exc}") from None
        self._client = client

    def write(self, batches: dict[Table, list[Row]]) -> int:
        client = self._client
        assert client is not None, "open() first"
        prefix, maxlen = self.config.prefix, self.config.stream_maxlen
        sent: list[tuple[Table, str, Row, bytes]] = []
        try:
            pipe = client.pipeline(transaction=False)
            for table, rows in batches.items():
                names = self._names[table]
                for row in rows:
                    topic = prefix + table.topic(row)
                    packed = self._encode(dict(zip(names, row, strict=True)))
                    pipe.xadd(topic, {"row": packed}, id=entry_id(table, row), maxlen=maxlen, approximate=True)
                    sent.append((table, topic, row, packed))
            results = pipe.execute(raise_on_error=False)
            newest: dict[str, tuple[Table, Row]] = {}
            live = client.pipeline(transaction=False)
            for (table, topic, row, packed), result in zip(sent, results, strict=True):
                if isinstance(result, Exception):
                    if _DUPLICATE in str(result):
                        continue  # held already: written by an earlier try
                    raise StoreDown(f"Redis refused a row of {topic}: {result}")
                live.publish(topic, packed)
                newest[topic] = (table, row)
            for topic, (table, row) in newest.items():
                live.hset(f"{prefix}last:{topic.removeprefix(prefix)}", mapping=_fields(self._names[table], row))
            live.execute()
        except self._redis.ConnectionError as exc:
            raise StoreDown(f"Redis: {exc}") from None
        except self._redis.TimeoutError as exc:
            raise StoreDown(f"Redis: {exc}") from None
        return _count_new(results)

    def tick(self) -> None:
        """Nothing waits: every write is sent."""

    def held(self) -> Held:
        """The newest entry of every stream under `prefix` whose name is a stored topic."""
        assert self._client is not None, "open() first"
        out: Held = []
        try:
            for key in self._client.scan_iter(match=f"{self.config.prefix}*", _type="stream"):
                topic = key.decode()[len(self.config.prefix):]
                if topic.partition(".")[0] not in TABLE_OF_KIND:
                    continue
                for _, fields in self._client.xrevrange(key, count=1):
                    row = self._decode(fields[b"row"])
                    out.append((topic, row["src"], int(row["seq"])))
        except (self._redis.ConnectionError, self._redis.TimeoutError) as exc:
            raise StoreDown(f"Redis: {exc}") from None
        return out

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()


def _fields(names: tuple[str, ...], row: Row) -> dict[str, Any]:
    """A row as hash fields (Redis has no null: an empty side of a quote is "")."""
    return {name: "" if value is None else value for name, value in zip(names, row, strict=True)}


def _count_new(results: list[Any]) -> int:
    return sum(1 for r in results if not isinstance(r, Exception))


def make(config: RedisSink, *, plant_partitions: int) -> RedisStore:  # noqa: ARG001 - the common face
    return RedisStore(config)

"""Kafka: one topic per table, key = symbol, partition = the plant's CRC-32 partition.

Topics are ``<topic_prefix>bars``, ``...trades``, ``...quotes``, ``...anomalies`` (created if
absent, with `partitions` partitions: by default the plant's `partitions.count`, so Kafka
partition N holds exactly the symbols of plant partition N, and several plants each owning
some partitions fill one log without overlap). Values are MessagePack maps of the row;
headers carry ``seq`` and ``src``. The producer is idempotent (``enable.idempotence``): its
own retries never duplicate or reorder.

Exactly once across sink restarts: at open the store reads back every partition of its
topics (bounded by the topics' retention) and remembers their natural keys; a row whose key is there is
not produced again. A batch counts as written once every message of it is acknowledged by
the broker (``acks=all``); a message whose delivery failed is produced again by the retry.
"""

from __future__ import annotations

from typing import Any

import msgspec

from streamctl.bus.partitioning import partition_of
from streamctl.sinks.rows import TABLES, Row, Table
from streamctl.sinks.settings import KafkaSink
from streamctl.sinks.stores import Held, StoreDown, require

__all__ = ["KafkaStore", "make", "topic_names"]

_TIMEOUT = 5.0
"""Longest a call to the broker may block the sink loop (its heartbeat goes on after)."""


def topic_names(config: KafkaSink) -> dict[Table, str]:
    """Kafka topic per table."""
    return {t: f"{config.topic_prefix}{t.name}" for t in TABLES}


class KafkaStore:
    """Rows into Kafka topics (see the module docstring)."""

    def __init__(self, config: KafkaSink, *, plant_partitions: int):
        self.config = config
        self.partitions = config.partitions or plant_partitions
        self._ck: Any = require("confluent_kafka", "confluent-kafka", "kafka")
        self._admin_mod: Any = require("confluent_kafka.admin", "confluent-kafka", "kafka")
        self._topics = topic_names(config)
        self._producer: Any = None
        self._keys: dict[Table, set[tuple]] = {t: set() for t in TABLES}
        self._latest: dict[tuple[str, str], tuple[int, int]] = {}
        self._key_of = {t: t.key_of() for t in TABLES}
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder(dict[str, Any]).decode

    # ------------------------------------------------------------------ open
    def open(self) -> None:
        base = {"bootstrap.servers": self.config.bootstrap, "socket.connection.setup.timeout.ms": 5000}
        try:
            self._ensure_topics(base)
            self._resume(base)
        except self._ck.KafkaException as exc:
            raise StoreDown(f"Kafka at {self.config.bootstrap}: {exc}") from None
        self._producer = self._ck.Producer(base | {
            "enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "zstd",
            "message.timeout.ms": 30_000})

    def _ensure_topics(self, base: dict[str, Any]) -> None:
        admin = self._admin_mod.AdminClient(base)
        existing = admin.list_topics(timeout=_TIMEOUT).topics
        missing = [self._admin_mod.NewTopic(name, num_partitions=self.partitions, replication_factor=1)
                   for name in self._topics.values() if name not in existing]
        for _name, future in (admin.create_topics(missing, operation_timeout=_TIMEOUT).items() if missing else []):
            try:
                future.result()
            except self._ck.KafkaException as exc:
                if exc.args[0].code() != self._ck.KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
        for name in self._topics.values():
            found = admin.list_topics(name, timeout=_TIMEOUT).topics[name]
            if found.error is None and len(found.partitions) != self.partitions:
                raise StoreDown(f"Kafka topic {name} has {len(found.partitions)} partitions, the sink wants "
                                f"{self.partitions} (`partitions`): a symbol would land in another partition")

    def _resume(self, base: dict[str, Any]) -> None:
        """Read every partition to its end: the natural keys it holds, and the newest row per
        plant topic and publisher. (From the beginning: the end offset some Kafka-compatible
        brokers report is not the log's, while the end-of-partition event is.)"""
        ck = self._ck
        consumer = ck.Consumer(base | {"group.id": "streamctl-sink-resume", "enable.auto.commit": False,
                                       "enable.partition.eof": True, "fetch.wait.max.ms": 50})
        table_of = {name: table for table, name in self._topics.items()}
        for keys in self._keys.values():
            keys.clear()
        try:
            consumer.assign([ck.TopicPartition(name, p, ck.OFFSET_BEGINNING)
                             for name in table_of for p in range(self.partitions)])
            open_partitions = {(name, p) for name in table_of for p in range(self.partitions)}
            while open_partitions:
                msg = consumer.poll(_TIMEOUT)
                if msg is None:
                    raise StoreDown("Kafka: reading the topics back stalled")
                if msg.error() is not None:
                    if msg.error().code() != ck.KafkaError._PARTITION_EOF:
                        raise ck.KafkaException(msg.error())
                    open_partitions.discard((msg.topic(), msg.partition()))
                    continue
                self._note(table_of[msg.topic()], self._decode(msg.value()))
        finally:
            consumer.close()

    def _note(self, table: Table, row: dict[str, Any]) -> None:
        self._keys[table].add(tuple(row[c] for c in table.key))
        topic = table.topic((row["symbol"], row.get("interval")))
        order = row["ts_start"] if table.kind == "bar" else row["ts_recv"]
        mark = (int(order), int(row["seq"]))
        if mark > self._latest.get((topic, row["src"]), (-1, -1)):
            self._latest[topic, row["src"]] = mark

    # ------------------------------------------------------------------ write
    def write(self, batches: dict[Table, list[Row]]) -> int:
        producer = self._producer
        assert producer is not None, "open() first"
        delivered: list[tuple[Table, Row]] = []
        failed: list[str] = []

        def on_delivery(table: Table, row: Row):
            def done(err, _msg) -> None:
                if err is None:
                    delivered.append((table, row))
                else:
                    failed.append(str(err))
            return done

        for table, rows in batches.items():
            name, names, keys, key_of = self._topics[table], table.names, self._keys[table], self._key_of[table]
            seq_at, src_at = table.index("seq"), table.index("src")
            for row in rows:
                if key_of(row) in keys:
                    continue
                symbol = row[0]
                while True:
                    try:
                        producer.produce(name, value=self._encode(dict(zip(names, row, strict=True))),
                                         key=symbol.encode(), partition=partition_of(symbol, self.partitions),
                                         headers=[("seq", str(row[seq_at]).encode()), ("src", row[src_at].encode())],
                                         on_delivery=on_delivery(table, row))
                        break
                    except BufferError:  # the producer's queue is full: let it send
                        producer.poll(0.1)
        left = producer.flush(30.0)
        for table, row in delivered:
            self._keys[table].add(self._key_of[table](row))
            self._note_row(table, row)
        if left or failed:
            raise StoreDown(f"Kafka: {left} messages undelivered, {len(failed)} failed"
                            + (f" ({failed[0]})" if failed else ""))
        return len(delivered)

    def _note_row(self, table: Table, row: Row) -> None:
        names = table.names
        self._note(table, dict(zip(names, row, strict=True)))

    def tick(self) -> None:
        """Serve the producer's delivery reports."""
        if self._producer is not None:
            self._producer.poll(0)

    def held(self) -> Held:
        return [(topic, src, seq) for (topic, src), (_, seq) in sorted(self._latest.items())]

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.flush(10.0)


def make(config: KafkaSink, *, plant_partitions: int) -> KafkaStore:
    return KafkaStore(config, plant_partitions=plant_partitions)

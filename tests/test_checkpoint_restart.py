"""A worker restored from a checkpoint plus the journal's tail publishes what an uninterrupted one
does (issue 9, item 2, with checkpoints).

A real file is replayed under `streamctl up` (`configs/replay.yaml`) with a checkpoint every
half second, and worker-0 is SIGKILLed three times: right after a checkpoint appears, mid-way
between two (messages published since the newest), and once after its newest checkpoint was
corrupted while the worker was stopped (the restart must fall back to the one before). Each
restart must say it came from a checkpoint, and every bar, VWAP, EMA and book message (payload
and `seq`) must equal one uninterrupted pass over the batches the worker journaled, with each
topic's `seq` running 1, 2, 3 ... and every bar equal to `streamctl replay` of the file.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import yaml
import zmq
from _common import free_port, wait_until
from _data import sample
from _replayref import by_topic, journal_rows, replay_rows

from streamctl.cli.config import load_config
from streamctl.cli.tailing import to_row
from streamctl.client import Subscriber

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parent.parent
FILES = {
    "mbp1": ("nautilus_trader/historical_bars_catalog/futures_mbp-1_2024-07-01T23-58_2024-07-02T00-02.dbn.zst",
             8, "bar"),
    "mbo": ("nautilus_trader/order_book_deltas_catalog/orderbooks_mbo_2024-05-08T00-00-00_2024-05-08T00-00-02.dbn.zst",
            0.2, "book"),
}
KINDS = {"bar", "vwap", "ema", "book"}


def _by_position(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.ckpt"), key=lambda p: tuple(int(x) for x in p.name.split(".")[1:3]))


def _newest(directory: Path) -> str | None:
    names = _by_position(directory)
    return names[-1].name if names else None


@pytest.mark.parametrize("which", sorted(FILES))
def test_a_worker_restored_from_checkpoints_publishes_what_an_uninterrupted_one_does(plant, tmp_path, which):
    path, speed, kind = FILES[which]
    file = sample(path)
    replayed = replay_rows([file], REPO / "configs/replay.yaml", tmp_path)
    reference = by_topic(replayed, {"bar"})
    n_total = sum(map(len, by_topic(replayed, {kind}).values()))
    name, port = f"ckp{which}{os.getpid() % 100000}", free_port()
    config = plant.replay_config(name, REPO / "configs/replay.yaml", file, speed=speed, port=port)
    settings = yaml.safe_load(config.read_text())
    settings["journal"] = {"checkpoint_interval": 0.5, "checkpoint_records": None}
    config.write_text(yaml.safe_dump(settings))
    journal = Path(os.environ["XDG_DATA_HOME"]) / "streamctl" / name / "journal" / "p0"
    context = zmq.Context()
    context.reconnect_ivl = 10
    sub = Subscriber(f"tcp://127.0.0.1:{port}", rcvhwm=0, context=context)
    rows: list[dict] = []
    events: list[tuple[str, str]] = []
    details: list[str] = []
    poll = lambda: sub.poll(0.02)  # noqa: E731
    seen = lambda k=kind: sum(r["topic"].startswith(f"{k}.") for r in rows)  # noqa: E731
    try:
        sub.subscribe("bar.", "vwap.", "ema.", "book.", "event.")
        sub.on_message(lambda topic, payload: rows.append(to_row(topic, payload)))
        sub.on_event(lambda event: events.append((event.source, event.kind)))
        plant.run("up", str(config), "--detach", check=True)
        pids = [plant.process(name, "worker-0")["pid"]]

        def restart(expected: str) -> None:
            restarted = wait_until(lambda: (p := plant.process(name, "worker-0"))["pid"] not in pids
                                   and p["state"] == "ready" and p, 60, "worker-0 restarted", poll)
            pids.append(restarted["pid"])
            details.append(restarted["detail"])
            assert f"restored checkpoint {expected} + " in restarted["detail"]

        # 1. Right after a checkpoint: the tail to replay is (nearly) empty.
        wait_until(lambda: seen() >= 0.15 * n_total and _newest(journal), 120, "15 % and a checkpoint", poll)
        before = _newest(journal)
        wait_until(lambda: _newest(journal) != before, 60, "a new checkpoint", poll)
        os.kill(pids[-1], signal.SIGSTOP)  # stopped, it writes no newer one before it is killed
        newest = _newest(journal)
        os.kill(pids[-1], signal.SIGKILL)
        restart(newest)
        # 2. Mid-way between two: messages published since the newest checkpoint are in the tail.
        wait_until(lambda: seen() >= 0.4 * n_total, 120, "40 %", poll)
        wait_until(lambda: _newest(journal), 60, "a checkpoint", poll)
        count = len(rows)
        wait_until(lambda: len(rows) >= count + 3, 60, "3 messages after the checkpoint", poll)
        os.kill(pids[-1], signal.SIGSTOP)
        newest = _newest(journal)  # one more may have come in the meantime: the tail starts there
        os.kill(pids[-1], signal.SIGKILL)
        restart(newest)
        # 3. The newest checkpoint is corrupt: the restart falls back to the one before.
        wait_until(lambda: seen() >= 0.65 * n_total and len(list(journal.glob("*.ckpt"))) == 2, 120,
                   "65 % and two checkpoints", poll)
        os.kill(pids[-1], signal.SIGSTOP)
        *_, older, newest = _by_position(journal)  # (a third may be in, not yet pruned)
        raw = bytearray(newest.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        newest.write_bytes(bytes(raw))
        os.kill(pids[-1], signal.SIGKILL)
        restart(older.name)

        wait_until(lambda: ("esu4", "done") in events, 120, "the feed to finish", poll)
        worker = plant.settled(name)
        plant.run("down", "--name", name, check=True)
        wait_until(lambda: ("worker-0", "stopped") in events, 30, "worker-0's last message", poll)
    finally:
        sub.close()
        context.term()

    assert worker["restarts"] == 3 and worker["drops"]["late"] == 0
    ours = by_topic(rows, KINDS)
    for topic, messages in ours.items():
        assert [m["seq"] for m in messages] == list(range(1, len(messages) + 1)), f"{topic}: seq gap or repeat"
    assert by_topic(rows, {"bar"}) == reference
    uninterrupted = by_topic(journal_rows(journal, load_config(config).calculators), KINDS)
    assert set(ours) == set(uninterrupted)
    for topic, messages in uninterrupted.items():
        assert ours[topic] == messages, topic
    assert not all(" + 0 records" in detail for detail in details), details  # some tail was replayed

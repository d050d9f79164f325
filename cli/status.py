"""What `streamctl status` and the foreground view show: the plant's own measurements.

Everything comes from shared memory the plant writes: the process table (heartbeats,
counters, and the rates, memory and CPU% the supervisor samples every second) and the ring
headers (fill, consumer lag, overflow). Nothing here guesses. Memory is shown twice: RSS
counts the pages every child shares with the forkserver, USS only what the process alone
holds, so the USS column adds up to what the plant really costs (`--json` also has PSS, which
splits shared pages among their users, and each worker's ts_recv -> publish latency histogram).
"""

from __future__ import annotations

import time
from typing import Any

__all__ = ["collect_status", "render_table"]

_DROP_CAUSES = ("overflow", "malformed", "late", "gaps")


def collect_status(manifest: dict[str, Any], *, table=None, rings: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-ready snapshot of a running plant.

    `table` and `rings` let the supervisor pass the handles it already holds; otherwise
    segments are attached read-only and closed again.
    """
    from streamctl.shm.ring import Ring
    from streamctl.shm.stats import ProcessTable, Role, State

    own_table = table is None
    table = table or ProcessTable.attach(manifest["stats"])
    opened: dict[str, Any] = {}
    try:
        rows = table.snapshot()
        ring_info: dict[str, dict[str, Any]] = {}
        for entry in manifest.get("rings", []):
            ring = (rings or {}).get(entry["name"])
            if ring is None:
                try:
                    ring = opened[entry["name"]] = Ring.attach(entry["name"])
                except Exception:
                    continue
            ring_info[entry["name"]] = {
                "feed": entry["feed"],
                "partition": entry["partition"],
                "capacity": ring.capacity,
                "fill": ring.fill,
                "produced": ring.produced,
                "consumed": ring.consumed,
                "dropped": ring.dropped,
            }
        now = time.time_ns()
        processes = []
        for row in rows:
            if not row.get("name"):
                continue
            state = State(int(row["state"])).name.lower()
            name, role = row["name"], Role(row["role"])
            if role == Role.INGEST:
                mine = [r for r in ring_info.values() if r["feed"] == name]
            elif role == Role.WORKER:
                part = int(name.rsplit("-", 1)[-1])
                mine = [r for r in ring_info.values() if r["partition"] == part]
            else:
                mine = []
            fill = max((r["fill"] / r["capacity"] for r in mine), default=0.0)
            # A sink's lag is its backlog: rows received and not yet in its store.
            lag = int(row["backlog"]) if role == Role.SINK else sum(r["fill"] for r in mine)
            hb = int(row.get("heartbeat_ns", 0))
            processes.append({
                "name": name,
                "role": role,
                "pid": int(row["pid"]),
                "core": None if int(row["cpu"]) < 0 else int(row["cpu"]),
                "state": state,
                "alive": state in {"starting", "ready", "reconnecting", "stopping"},
                "restarts": int(row["restarts"]),
                "records_in": int(row["records_in"]),
                "records_out": int(row["records_out"]),
                "rate_in": round(float(row["rate_in"]), 1),
                "rate_out": round(float(row["rate_out"]), 1),
                "drops": {cause: int(row[cause]) for cause in _DROP_CAUSES},
                "errors": int(row["errors"]),
                "reconnects": int(row["reconnects"]),
                "duplicates": int(row["duplicates"]),
                "ring_fill": round(fill, 4),
                "consumer_lag": lag,
                "store_lag_s": round(int(row["lag_ns"]) / 1e9, 3) if role == Role.SINK else None,
                "progress": _progress(row),
                "rss": int(row["rss"]),
                "uss": int(row["uss"]),
                "pss": int(row["pss"]),
                "cpu_pct": round(float(row["cpu_pct"]), 1),
                "cpu_seconds": round(float(row["cpu_seconds"]), 3),
                "latency": _latency(row) if role == Role.WORKER else None,
                "heartbeat_age_s": round((now - hb) / 1e9, 3) if hb else None,
                "detail": row.get("detail", ""),
            })
        return {
            "plant": manifest["name"],
            "state": manifest.get("state"),
            "endpoint": manifest.get("endpoint"),
            "recovery": manifest.get("recovery"),
            "journal": manifest.get("journal"),
            "history": manifest.get("history"),
            "supervisor": {"pid": manifest["supervisor_pid"], "started": manifest.get("supervisor_started")},
            "processes": processes,
            "rings": list(ring_info.values()),
        }
    finally:
        for ring in opened.values():
            ring.close()
        if own_table:
            table.close()


def _latency(row: dict[str, Any]) -> dict[str, Any]:
    """A worker's ts_recv -> publish histogram: records per bucket (upper bounds in ns, the last
    bucket unbounded), and their sum in seconds."""
    from streamctl.shm.stats import LATENCY_BOUNDS_NS

    return {"bounds_ns": [int(b) for b in LATENCY_BOUNDS_NS], "counts": list(row["latency_counts"]),
            "sum_s": float(row["latency_sum_s"])}


def _progress(row: dict[str, Any]) -> float | None:
    total = float(row.get("progress_total", 0.0))
    return round(float(row.get("progress_done", 0.0)) / total, 4) if total > 0 else None


def _human(n: float) -> str:
    for unit in ("", "k", "M", "G"):
        if abs(n) < 1000:
            return f"{n:.0f}{unit}" if unit == "" else f"{n:.1f}{unit}"
        n /= 1000
    return f"{n:.1f}T"


def render_table(status: dict[str, Any]) -> str:
    """The one-screen view: one row per process."""
    head = (f"plant {status['plant']} [{status.get('state')}]  supervisor pid {status['supervisor']['pid']}  "
            f"endpoint {status.get('endpoint')}  recovery {status.get('recovery') or 'off'}  "
            f"journal {status.get('journal') or 'off'}  history {status.get('history') or 'off'}")
    cols = f"{'name':<16}{'role':<8}{'pid':>8}{'core':>5} {'state':<13}{'restarts':>8}{'in/s':>9}{'out/s':>9}" \
           f"{'in total':>10}{'fill':>7}{'lag':>8}{'overflow':>9}{'malformed':>10}{'late':>7}{'gaps':>6}{'dups':>8}{'errors':>7}" \
           f"{'rss':>8}{'uss':>8}{'cpu%':>6}  detail"
    lines = [head, cols]
    for p in status["processes"]:
        tail = f" {p['progress'] * 100:.0f}%" if p.get("progress") is not None else ""
        if p.get("store_lag_s") is not None:  # a sink: `lag` is its backlog, this how old its newest stored row was
            tail += f" store lag {p['store_lag_s']:.3f} s"
        lines.append(
            f"{p['name'][:15]:<16}{p['role']:<8}{p['pid']:>8}{'-' if p['core'] is None else p['core']:>5} "
            f"{p['state']:<13}{p['restarts']:>8}{_human(p['rate_in']):>9}{_human(p['rate_out']):>9}"
            f"{_human(p['records_in']):>10}{p['ring_fill'] * 100:>6.1f}%{_human(p['consumer_lag']):>8}"
            f"{p['drops']['overflow']:>9}{p['drops']['malformed']:>10}{p['drops']['late']:>7}"
            f"{p['drops']['gaps']:>6}{_human(p['duplicates']):>8}{p['errors']:>7}{_human(p['rss']):>8}{_human(p['uss']):>8}{p['cpu_pct']:>6.0f}  {p['detail']}{tail}"
        )
    return "\n".join(lines)

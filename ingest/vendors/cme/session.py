"""A CME MDP 3.0 channel session: definitions, A/B arbitration, gap recovery from the snapshot loop.

- ``open`` joins the instrument definition loop until every configured symbol has its
  SecurityID (templates 54/55/56), leaves it, and joins incremental feeds A and B.
- Arbitration: packets are taken in ``MsgSeqNum`` order, the first copy wins, later copies are
  counted as duplicates. A packet missing on both feeds for ``gap_timeout_ms`` (or with
  ``max_pending`` packets waiting behind it) is a gap.
- A gap keeps the books that provably lost nothing: an instrument whose first MD entry among
  the packets received past the hole continues its RptSeq (last + 1). If every book is kept,
  nothing recovers: the hole is skipped. With ``book: mbo`` nothing is provable (order updates
  carry no RptSeq).
- Recovery: on a gap that some book cannot survive (or on joining after the first packet of the
  session) the channel is out of sync: those books (all, on a late join) are published empty (a
  RESET) and an event says so; incrementals are queued (kept books' updates too, applied in
  order after the loop); the Market Recovery loop is joined; when one loop has delivered every instrument's
  SnapshotFullRefresh52 (``TotNumReports`` of them) each book not kept is rebuilt, queued packets newer
  than the loop's ``LastMsgSeqNumProcessed`` are applied (entries at or below an instrument's
  snapshot RptSeq are skipped), and the recovery feed is left. With ``book: mbo`` the books are
  rebuilt from SnapshotFullRefreshOrderBook53 instead (every chunk of every instrument), and the
  order updates of queued packets up to its ``LastMsgSeqNumProcessed`` are skipped.
- TransactTime going backwards between messages in MsgSeqNum order is counted
  (`Channel.ts_regressions`) and reported in an event at the 1st, 2nd, 4th, 8th... time.
- Malformed packets are counted (``malformed``) and skipped before arbitration, so the other
  feed's copy can still fill the sequence.
"""

from __future__ import annotations

import logging
import select
import socket
import time

import numpy as np

from streamctl.bus.wire import EventKind
from streamctl.ingest.vendor_api import FeedContext, SessionError
from streamctl.ingest.vendors.cme.channel import Channel
from streamctl.ingest.vendors.cme.decoder import BAD_REASONS, Decoder
from streamctl.ingest.vendors.cme.options import Group, Options
from streamctl.ingest.vendors.cme.schema import BUNDLED_SCHEMA, load_schema
from streamctl.ingest.vendors.cme.sockets import drain, join
from streamctl.shm.stats import CounterName

__all__ = ["Session", "DEFINITION_TEMPLATES"]

log = logging.getLogger(__name__)

DEFINITION_TEMPLATES = (54, 55, 56)
_DRAIN = 4096
"""Most datagrams read from one socket per poll."""


class Session:
    """One channel's feed; see the module docstring for the rules."""

    def __init__(self, options: Options, feed, ctx: FeedContext):
        self._opt = options
        self._ctx = ctx
        self._symbols = list(feed.symbols or [])
        schema = load_schema(options.schema or BUNDLED_SCHEMA)
        self._decoder = Decoder(schema)
        self._ids: dict[int, int] = {}
        self._found: dict[str, int] = {}
        """Configured symbol -> SecurityID, from the definition loop."""
        """SecurityID -> our instrument id, for the configured symbols."""
        self.channel = Channel(schema, lambda sid: self._ids.get(sid, 0), depth=options.depth,
                               merge_implied=options.implied == "merge", mbo=options.book == "mbo",
                               on_instrument_gap=self._instrument_gap)
        self._incremental: list[socket.socket] = []
        self._recovery: list[socket.socket] = []
        self.expected: int | None = None
        """The next MsgSeqNum to apply (None until the first packet)."""
        self.pending: dict[int, bytes] = {}
        """Packets received past `expected` (held for the other feed, or queued while recovering)."""
        self._missing_since: float | None = None
        self.recovering = False
        self._snapshots: dict[int, tuple[int, int, np.ndarray, int]] = {}
        """Per SecurityID, a complete snapshot: (LastMsgSeqNumProcessed, RptSeq, entries, TransactTime)."""
        self._chunks: dict[int, dict[int, np.ndarray]] = {}
        """Per SecurityID, the 53 chunks received so far (by CurrentChunk)."""
        self._rebuilding: set[int] = set()
        """SecurityIDs whose books the current recovery rebuilds (the others were kept)."""
        self.duplicates = 0
        self.recoveries = 0
        self._next_regression_report = 1

    # ---- FeedSession face
    def open(self) -> None:
        self._ids = self._resolve_symbols()
        opt = self._opt
        try:
            self._incremental = [join(g.group, g.port, opt.interface, opt.recv_buffer)
                                 for g in (opt.incremental_a, opt.incremental_b) if g is not None]
        except OSError as exc:
            self.close()
            raise SessionError(f"cannot join the incremental feeds on {opt.interface}: {exc}") from None
        self._ctx.event(EventKind.CONNECTED, f"joined {self._where(opt.incremental_a)}"
                        + (f" and {self._where(opt.incremental_b)}" if opt.incremental_b else "")
                        + f"; {', '.join(f'{name}={sid}' for name, sid in self._found.items())}")

    def poll(self, timeout: float) -> np.ndarray | None:
        socks = self._incremental + self._recovery
        if not socks:
            raise SessionError("session is not open")
        ready, _, _ = select.select(socks, [], [], timeout)
        if packets := self._read(ready, self._incremental):
            self._arbitrate(packets)
        if snapshots := self._read(ready, self._recovery):
            self._on_snapshots(snapshots)
        if not self.recovering:
            self._advance()
        self._report_regressions()
        return self.channel.take(time.time_ns())

    @staticmethod
    def _read(ready: list[socket.socket], socks: list[socket.socket]) -> list[bytes]:
        packets: list[bytes] = []
        for sock in ready:
            if sock in socks:
                drain(sock, packets, _DRAIN)
        return packets

    def close(self) -> None:
        for sock in self._incremental + self._recovery:
            sock.close()
        self._incremental, self._recovery = [], []

    def instruments(self) -> list[int]:
        return sorted(self._ids.values())

    # ---- definitions
    def _where(self, g: Group | None) -> str:
        return f"{g.group}:{g.port}" if g else "-"

    def _resolve_symbols(self) -> dict[int, int]:
        opt = self._opt
        try:
            sock = join(opt.definition.group, opt.definition.port, opt.interface, opt.recv_buffer)
        except OSError as exc:
            raise SessionError(f"cannot join the definition feed {self._where(opt.definition)}: {exc}") from None
        wanted = set(self._symbols)
        found: dict[str, int] = {}
        deadline = time.monotonic() + opt.definition_timeout_s
        try:
            while wanted - found.keys():
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = ", ".join(sorted(wanted - found.keys()))
                    raise SessionError(f"symbols {missing} not in the definition loop {self._where(opt.definition)} "
                                       f"after {opt.definition_timeout_s:g} s")
                self._ctx.heartbeat()
                if not select.select([sock], [], [], min(left, 0.5))[0]:
                    continue
                packets: list[bytes] = []
                drain(sock, packets, _DRAIN)
                dec = self._decoder.decode(packets)
                self._count_bad(dec.bad)
                for tid in DEFINITION_TEMPLATES:
                    if tid in set(dec.msg_tid.tolist()):
                        _, roots = dec.root(tid)
                        for sym, sid in zip(roots["Symbol"].tolist(), roots["SecurityID"].tolist(), strict=True):
                            name = sym.split(b"\0", 1)[0].decode("ascii", "replace")
                            if name in wanted:
                                found[name] = int(sid)
        finally:
            sock.close()
        self._found = found
        return {found[name]: self._ctx.instrument_id(name) for name in self._symbols}  # config order

    # ---- arbitration
    def _arbitrate(self, packets: list[bytes]) -> None:
        dec = self._decoder.decode(packets)
        self._count_bad(dec.bad)
        before = self.duplicates
        for i in np.flatnonzero(dec.bad == 0).tolist():
            seq = int(dec.seq[i])
            if self.expected is None:
                self.expected = seq
                if seq != 1:  # joined mid-session: the books start from the snapshot loop
                    self._start_recovery(f"joined the channel at packet {seq}, after its start")
            if seq < self.expected or seq in self.pending:
                self.duplicates += 1
            else:
                self.pending[seq] = packets[i]
        if self.duplicates > before:
            self._ctx.count(CounterName.DUPLICATES, self.duplicates - before)

    def _advance(self) -> None:
        """Apply every packet that is next in sequence; declare a gap if one stays missing."""
        assert self.expected is not None or not self.pending
        while not self.recovering:
            run: list[bytes] = []
            while self.expected in self.pending:
                run.append(self.pending.pop(self.expected))
                self.expected += 1  # type: ignore[operator]
            if run:
                self.channel.apply(self._decoder.decode(run))
            if not self.pending:
                self._missing_since = None
                return
            now = time.monotonic()
            if self._missing_since is None:
                self._missing_since = now
            if (now - self._missing_since) * 1000 < self._opt.gap_timeout_ms and len(self.pending) <= self._opt.max_pending:
                return
            first = min(self.pending)
            lost = first - int(self.expected)  # type: ignore[arg-type]
            self._ctx.count(CounterName.GAPS, lost)
            self._gap(f"packets {self.expected}..{first - 1} lost on both feeds")

    def _gap(self, why: str) -> None:
        """Packets lost on both feeds: books that provably lost nothing stay, the rest recover.

        A book provably lost nothing when its instrument's first MD entry among the packets
        received past the hole continues its RptSeq (every MD entry of an instrument takes the
        next RptSeq, so none of its entries was in the lost packets). Order updates carry no
        RptSeq, so with ``book: mbo`` nothing is provable and every book recovers."""
        books = self.channel.book_sids() or list(self._ids.keys())
        kept: set[int] = set()
        if not self.channel.mbo:
            queued = [self.pending[seq] for seq in sorted(self.pending)]
            kept = self.channel.contiguous(self._decoder.decode(queued)) & set(books)
        lost = [sid for sid in books if sid not in kept]
        if lost:
            self._start_recovery(why, gap=True, sids=lost)
            return
        self.expected = min(self.pending)
        self._missing_since = None
        self.channel.expect_jumps(kept)
        self._ctx.event(EventKind.GAP, f"{why}: every book continued its RptSeq after it, none lost an update; "
                        f"no recovery needed")

    # ---- recovery
    def _start_recovery(self, why: str, *, gap: bool = False, sids: list[int] | None = None) -> None:
        """Out of sync: the books of `sids` (default: all) are flagged empty and rebuilt from the
        snapshot loop; incrementals are queued meanwhile."""
        self.recovering = True
        self._missing_since = None
        self._snapshots.clear()
        self._chunks.clear()
        everything = self.channel.book_sids() or list(self._ids.keys())
        self._rebuilding = set(everything if sids is None else sids)
        self.channel.invalidate([sid for sid in everything if sid in self._rebuilding], time.time_ns())
        opt = self._opt
        if not self._recovery:
            try:
                self._recovery = [join(g.group, g.port, opt.interface, opt.recv_buffer)
                                  for g in (opt.recovery_a, opt.recovery_b) if g is not None]
            except OSError as exc:
                raise SessionError(f"cannot join the recovery feed {self._where(opt.recovery_a)}: {exc}") from None
        kept = len(everything) - len(self._rebuilding & set(everything))
        books = f"{len(self._rebuilding)} book(s) flagged empty" + (f", {kept} kept (RptSeq continued)" if kept else "")
        self._ctx.event(EventKind.GAP if gap else EventKind.SYSTEM,
                        f"{why}: channel out of sync, {books}, recovering from the snapshot loop "
                        f"{self._where(opt.recovery_a)}")

    def _on_snapshots(self, packets: list[bytes]) -> None:
        dec = self._decoder.decode(packets)
        self._count_bad(dec.bad)
        tid = 53 if self.channel.mbo else 52
        if not self.recovering or tid not in set(dec.msg_tid.tolist()):
            return
        if tid == 53:
            self._on_order_snapshots(dec)
            return
        idx, roots = dec.root(52)
        ent_msg, entries = dec.group(52, "NoMDEntries")
        total = 0
        for m, r in zip(idx.tolist(), roots, strict=True):
            sid = int(r["SecurityID"])
            self._snapshots[sid] = (int(r["LastMsgSeqNumProcessed"]), int(r["RptSeq"]), entries[ent_msg == m].copy(),
                                    int(r["TransactTime"]))
            total = int(r["TotNumReports"])
        if total and len(self._snapshots) >= total:
            self._finish_recovery()

    def _on_order_snapshots(self, dec) -> None:
        """Collect 53s; an instrument is complete once its `NoChunks` chunks have arrived."""
        idx, roots = dec.root(53)
        ent_msg, entries = dec.group(53, "NoMDEntries")
        total = 0
        for m, r in zip(idx.tolist(), roots, strict=True):
            sid, chunks = int(r["SecurityID"]), int(r["NoChunks"])
            have = self._chunks.setdefault(sid, {})
            have[int(r["CurrentChunk"])] = entries[ent_msg == m].copy()
            if len(have) >= chunks:
                parts = [have[c] for c in sorted(have)]
                self._snapshots[sid] = (int(r["LastMsgSeqNumProcessed"]), 0, np.concatenate(parts),
                                        int(r["TransactTime"]))
                del self._chunks[sid]
            total = int(r["TotNumReports"])
        if total and len(self._snapshots) >= total:
            self._finish_recovery()

    def _finish_recovery(self) -> None:
        # Books kept across the gap ignore their snapshots; an instrument new to us (a late
        # join) is rebuilt whenever the loop has it.
        kept = set(self.channel.book_sids()) - self._rebuilding
        used = {sid: snap for sid, snap in self._snapshots.items() if sid not in kept}
        last = min((s[0] for s in used.values()), default=self.expected - 1)  # type: ignore[operator]
        first = min(self.pending) if self.pending else last + 1
        if first > last + 1:
            self._snapshots.clear()  # this loop predates our queue: wait for the next one
            return
        exponent = self.channel.exponent.get(52)
        for sid, (seq, rpt, entries, ts) in used.items():
            if self.channel.mbo:
                self.channel.rebuild_orders(sid, seq, entries, ts)
            else:
                self.channel.rebuild(sid, rpt, entries, exponent, ts)
        # Every queued packet is applied: book entries a snapshot already holds (RptSeq at or
        # below its RptSeq) are skipped, trades are kept (the snapshot loop carries none).
        self.expected = first
        self._snapshots.clear()
        self.recovering = False
        self.recoveries += 1
        self._advance()
        if self.recovering:
            return  # the queue itself had a hole: a new recovery has started
        for sock in self._recovery:
            sock.close()
        self._recovery = []
        self._ctx.event(EventKind.SYSTEM, f"recovered: books rebuilt from the snapshot loop at packet {last}, "
                        f"queued packets applied; left the recovery feed")

    # ---- counters
    def _count_bad(self, bad: np.ndarray) -> None:
        refused = bad[bad != 0]
        if len(refused):
            self._ctx.count(CounterName.MALFORMED, len(refused))
            self._ctx.event(EventKind.MALFORMED, f"{len(refused)} packet(s) refused: {BAD_REASONS[int(refused[0])]}")

    def _report_regressions(self) -> None:
        """An event when TransactTime went backwards for the 1st, 2nd, 4th, 8th... time (bounded noise)."""
        n = self.channel.ts_regressions
        if n >= self._next_regression_report:
            self._next_regression_report = 2 * n
            self._ctx.event(EventKind.SYSTEM, f"TransactTime went back {n} time(s) on this channel so far (a message "
                            f"earlier than one before it in MsgSeqNum order); applied as sent")

    def _instrument_gap(self, sid: int, want: int, got: int) -> None:
        self._ctx.count(CounterName.GAPS)
        self._ctx.event(EventKind.GAP, f"SecurityID {sid}: RptSeq {want} expected, {got} received")



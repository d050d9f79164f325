"""After the forkserver's warm-up, no feed compiles a kernel: a compile of several seconds inside
a feed process misses heartbeats and gets the feed killed (on a machine with a cold cache)."""

from __future__ import annotations

from _data import DATA

from streamctl.ingest.formats.dbn import decoder, kernels, mbo_book
from streamctl.ingest.formats.dbn.warm_up import warm_up
from streamctl.ingest.vendor_api import EndOfInput, FeedConfig
from streamctl.ingest.vendors.replay.options import Options
from streamctl.ingest.vendors.replay.session import Session


class _Ctx:
    feed_name = "warm"

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}

    def instrument_id(self, symbol: str) -> int:
        return self.ids.setdefault(symbol, len(self.ids) + 1)

    def count(self, cause, n: int = 1) -> None:
        pass

    def event(self, kind, message: str, *, code: int | None = None) -> None:
        pass

    def progress(self, done: float, total: float) -> None:
        pass

    def heartbeat(self) -> None:
        pass


def _signatures() -> dict[str, int]:
    from numba.core.registry import CPUDispatcher

    return {f"{m.__name__}.{name}": len(fn.signatures) for m in (kernels, mbo_book, decoder)
            for name, fn in vars(m).items() if isinstance(fn, CPUDispatcher)}


def test_replaying_every_sample_compiles_nothing_after_the_warm_up():
    warm_up()
    before = _signatures()
    files = sorted(p for p in DATA.rglob("*") if p.name.endswith((".dbn", ".dbn.zst")))
    assert len(files) >= 10
    for path in files:
        session = Session(Options(files=[str(path)]), FeedConfig(name="warm", vendor="replay"), _Ctx())
        session.open()
        try:
            while True:
                session.poll(0)
        except EndOfInput:
            pass
        session.close()
    assert _signatures() == before

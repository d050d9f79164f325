"""The feed's screen: refusal codes and, for the accepted records, their rings, in one pass."""

from __future__ import annotations

import numpy as np
import pytest

from streamctl.ingest.routing import screen
from streamctl.ingest.validation import refusals
from streamctl.shm.records import RECORD_DTYPE, Kind


def _batch(n: int, rng: np.random.Generator) -> np.ndarray:
    batch = np.zeros(n, RECORD_DTYPE)
    batch["ts_event"] = batch["ts_recv"] = 1_719_878_281_000_000_000
    batch["kind"], batch["price"], batch["size"] = Kind.TRADE, 5_528_500_000_000, 1
    batch["instrument_id"] = rng.integers(0, 12, n)  # the table below knows ids 0..7
    bad = rng.random(n) < 0.3
    batch["size"][bad] = -1.0  # refused (size)
    batch["price"][rng.random(n) < 0.1] = 0  # refused (price) unless allowed
    return batch


@pytest.mark.parametrize("allow", [False, True])
def test_screen_agrees_with_the_refusals_and_the_routing_table(allow):
    rng = np.random.default_rng(5)
    ring_of = np.array([-1, 0, 1, 2, 0, -2, 1, -1], np.int64)  # -1: no ring yet, -2: another plant's
    for n in (0, 1, 3, 50, 777):
        batch = _batch(n, rng)
        codes, bad, rings, unknown = screen(batch, ring_of, allow_non_positive_prices=allow)
        want_codes, want_bad = refusals(batch, allow_non_positive_prices=allow)
        assert np.array_equal(codes, want_codes) and bad == want_bad
        ids = batch["instrument_id"][want_codes == 0].astype(np.int64)
        want_rings = np.where(ids < len(ring_of), ring_of[np.minimum(ids, len(ring_of) - 1)], -1)
        assert np.array_equal(rings, want_rings)
        assert unknown == int(np.count_nonzero(want_rings == -1))
        if n > 50:
            assert 0 < bad < n and 0 < unknown and np.any(rings == -2)


def test_screen_refuses_another_layout():
    with pytest.raises(TypeError, match="`batch` must have RECORD_DTYPE"):
        screen(np.zeros(3, np.int64), np.zeros(1, np.int64))

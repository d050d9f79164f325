"""Where a sink asks the plant's history for messages it did not get.

INTEGRATION POINT. The plant's journal and recovery service (the issue "Nothing lost") are
being built separately; their client side is to be ``streamctl.client.history.fetch_since(topic,
seq)``: the messages of `topic` after `seq`, as the wire Structs a subscriber decodes (a
``trade``/``quote`` message as a list). A sink calls it after a sequence gap, after its backlog
overflowed, and at start for each (topic, src) its store holds. While that module does not
exist, `fetch_since` returns None and the sink counts the loss (``gaps``, ``overflow``) and
reports it as an ``event.sink-<name>`` of kind ``gap``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["fetch_since", "history_available"]

_HISTORY_MODULE = "streamctl.client.history"


def _history() -> Callable[[str, int], Iterable[Any]] | None:
    try:
        module = importlib.import_module(_HISTORY_MODULE)
    except ImportError:
        return None
    return getattr(module, "fetch_since", None)


def history_available() -> bool:
    """Whether the plant's recovery client is installed."""
    return _history() is not None


def fetch_since(topic: str, seq: int) -> Iterable[Any] | None:
    """The messages of `topic` after `seq` from the plant's history, or None when there is no
    history to ask (the loss is then final)."""
    fetch = _history()
    return None if fetch is None else fetch(topic, seq)

"""Subscribe to a streamctl plant from Python.

>>> from streamctl.client import Subscriber
>>> with Subscriber("tcp://127.0.0.1:5555") as sub:  # doctest: +SKIP
...     sub.subscribe("bar.60s.AAPL", "trade.AAPL")
...     sub.on_bar(print)
...     sub.run(timeout=10)

Payload types are the wire Structs of `streamctl.bus.wire`; `docs/wire.md` is the
contract (and shows a subscriber in any language with a stock msgpack library).
"""

from streamctl.bus.curve import CurveClient
from streamctl.bus.curve import load_client as load_curve
from streamctl.bus.wire import Anomaly, Bar, Book, Event, Indicator, Quote, Status, Trade, Vwap
from streamctl.client.subscriber import DecodeError, Reconnect, SequenceGap, Subscriber, SubscriberError

# The payload names repeat `streamctl.bus.wire.__all__` on purpose: a literal list is what
# static tools read, and it makes the client's face complete without importing the bus.
__all__ = [
    "Subscriber",
    "CurveClient",
    "load_curve",
    "SequenceGap",
    "DecodeError",
    "Reconnect",
    "SubscriberError",
    "Bar",
    "Trade",
    "Quote",
    "Vwap",
    "Indicator",
    "Anomaly",
    "Book",
    "Event",
    "Status",
]

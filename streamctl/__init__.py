"""streamctl: a market-data plant (vendor feeds -> shared-memory rings -> workers -> ZeroMQ topics).

The repository keeps one top-level folder per layer (``shm``, ``bus``, ``ingest``, ``process``,
``cli``, ``client``); this package links them under one import name so nothing claims a
generic top-level name such as ``cli``, and so editors and type checkers resolve
``streamctl.*`` straight from a checkout. ``docs/architecture.md`` shows the layers.
"""

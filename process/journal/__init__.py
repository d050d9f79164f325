"""The worker's journal: every record a worker consumes, on disk before it is processed.

`settings` (the ``journal:`` config section), `files` (the file format, reading, repair of a
cut tail, retention) and `writer` (appending, rolling per day, syncing, the published-message
mark). The worker (`streamctl.process.worker`) writes it and, after a restart, replays it.
`docs/journal.md` documents the format.
"""

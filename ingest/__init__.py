"""Ingest: the feed process (one per feed), the reconnect policy, shared formats (DBN, CSV,
Parquet) and one folder per vendor. Built on `streamctl.shm` and `streamctl.bus`; never imports
`streamctl.process`."""

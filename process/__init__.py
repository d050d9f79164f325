"""Processing: the worker process (one per symbol partition) and its calculators. Built on
`streamctl.shm` and `streamctl.bus`; never imports `streamctl.ingest`."""

"""The bottom layer: the 64-byte record, SPSC rings in shared memory, segment naming and cleanup,
the symbol registry and the process table. It imports nothing else of streamctl."""

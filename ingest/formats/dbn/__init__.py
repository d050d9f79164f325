"""Databento Binary Encoding (DBN v1-v3): decoding, encoding (for the local venue) and the MBO book."""

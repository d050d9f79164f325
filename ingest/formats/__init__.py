"""File and stream formats shared by several vendors (DBN: Databento live and replay; CSV/Parquet)."""

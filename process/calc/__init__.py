"""The worker's calculators: bars, VWAP, SMA/EMA, anomaly rules and level books.

`CalculatorSet` (in `engine`) is the one entry point; `docs/calculators.md` documents every
setting, the output order and the exactness rules.
"""

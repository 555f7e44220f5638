"""Interpreters that define dialect semantics (the quant reference interpreter)."""

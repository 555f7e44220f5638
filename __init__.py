"""Ember: an MLIR-style multi-dialect compiler for edge neural accelerators, on xDSL."""

__version__ = "0.1.0"

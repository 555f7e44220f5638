"""Shared support code: diagnostics, atomic file output."""

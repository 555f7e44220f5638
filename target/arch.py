"""Ember NPU architecture presets: the one loader that the compiler and the simulator share.

The presets live in `arch_presets.json` beside this module. An `Arch` is identified by its
name and by `arch_hash`, a digest of its canonical JSON: every binary records the hash, and
the simulator refuses a binary built for different buffer sizes or costs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from ember.support.diagnostics import EmberError
from ember.target.isa import Buffer


@dataclass(frozen=True)
class Arch:
    """One NPU configuration. Buffer sizes are in bytes; the accumulator and parameter
    buffers hold int32 words, so they hold a quarter as many elements."""

    name: str
    description: str
    mac_rows: int
    """Rows of the MAC array: reduction (input channel x kernel tap) elements per cycle."""
    mac_cols: int
    """Columns of the MAC array: output channels per cycle."""
    vector_lanes: int
    """Elements per cycle of the vector unit (POST, ELTW, POOL, RESIZE, PREPROC)."""
    clock_mhz: int
    input_buffer_bytes: int
    weight_buffer_bytes: int
    acc_buffer_bytes: int
    param_buffer_bytes: int
    lut_buffer_bytes: int
    dram_bytes_per_cycle: int
    dma_setup_cycles: int
    compute_setup_cycles: int

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace. Its digest is the arch hash."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    @property
    def arch_hash(self) -> int:
        """A stable 64-bit digest of the canonical JSON (first 8 bytes of SHA-256)."""
        return int.from_bytes(hashlib.sha256(self.to_json().encode()).digest()[:8], "little")

    def buffer_bytes(self, buf: Buffer) -> int:
        return {
            Buffer.INP: self.input_buffer_bytes,
            Buffer.WGT: self.weight_buffer_bytes,
            Buffer.ACC: self.acc_buffer_bytes,
            Buffer.PAR: self.param_buffer_bytes,
            Buffer.LUT: self.lut_buffer_bytes,
        }[buf]

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> Arch:
        """Build an Arch from a JSON object, naming `source` in errors."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = sorted(names - set(data))
        extra = sorted(set(data) - names)
        if missing or extra:
            raise EmberError(f"{source}: arch fields missing {missing} / unknown {extra}; fix the arch description")
        for key in names - {"name", "description"}:
            if not isinstance(data[key], int) or data[key] <= 0:
                raise EmberError(f"{source}: arch field {key} must be a positive integer")
        return cls(**data)


@cache
def _presets() -> dict[str, dict[str, Any]]:
    text = resources.files("ember.target").joinpath("arch_presets.json").read_text()
    return json.loads(text)


def preset_names() -> list[str]:
    return sorted(_presets())


def load_arch(name: str) -> Arch:
    """The preset called `name` (for example "ember16", "ember32")."""
    presets = _presets()
    if name not in presets:
        raise EmberError(f"arch '{name}': no such preset; choose one of {', '.join(sorted(presets))}")
    return Arch.from_dict({"name": name, **presets[name]}, f"arch_presets.json: {name}")

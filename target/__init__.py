"""The Ember NPU: arch presets, ISA, binary container, simulator."""

"""Module passes, one per file; registered in `ember.universe`."""

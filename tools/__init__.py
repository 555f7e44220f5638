"""Command-line tools: ember-opt, ember-sim, ember-objdump, ember-as."""

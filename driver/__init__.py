"""The compilation driver behind ember-compile: the flow of stages and its report."""

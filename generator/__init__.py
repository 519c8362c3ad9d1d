"""Assemble lib percent-scripts and recipes into self-contained notebooks."""

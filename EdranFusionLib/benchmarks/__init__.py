"""Measurements behind the `benchmark` command, one module per concern; each returns plain dicts."""

"""fsslab.engine (being written)."""

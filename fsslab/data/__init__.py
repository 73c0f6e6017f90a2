"""fsslab.data (being written)."""

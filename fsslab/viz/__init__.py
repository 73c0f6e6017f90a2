"""fsslab.viz (being written)."""

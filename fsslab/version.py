"""The package version, in one place (read by ``fsslab.__version__``, checkpoints and the zoo)."""

__version__ = "0.1.0"

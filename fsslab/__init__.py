"""fsslab: a few-shot semantic segmentation lab (IPMT, AMFormer, episodic data, trainer, notebooks)."""

__version__ = "0.1.0"

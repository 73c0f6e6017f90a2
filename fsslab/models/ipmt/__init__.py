"""IPMT: intermediate prototype mining transformer for few-shot segmentation (NeurIPS'22)."""

from fsslab.models.ipmt.network import IPMT, TRACE_KEYS

__all__ = ["IPMT", "TRACE_KEYS"]

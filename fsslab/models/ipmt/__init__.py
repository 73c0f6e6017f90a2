"""IPMT: intermediate prototype mining transformer for few-shot segmentation (NeurIPS'22)."""

from fsslab.models.ipmt.model import IPMT, TRACE_KEYS

__all__ = ["IPMT", "TRACE_KEYS"]

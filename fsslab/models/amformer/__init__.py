"""AMFormer (NeurIPS'23, adversarial mining transformer) for few-shot segmentation: model, G, D and losses."""

from fsslab.models.amformer.model import TRACE_KEYS, AMFormer

__all__ = ["TRACE_KEYS", "AMFormer"]

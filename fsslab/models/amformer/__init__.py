"""AMFormer (NeurIPS'23, adversarial mining transformer) for few-shot segmentation: model, G, D and losses, and
the analysis of what its discriminator says about a mask (``analysis``)."""

from fsslab.models.amformer.analysis import add_discriminator_trace, discriminator_score_fn
from fsslab.models.amformer.model import TRACE_KEYS, AMFormer

__all__ = ["TRACE_KEYS", "AMFormer", "add_discriminator_trace", "discriminator_score_fn"]

"""IPMT (Liu et al., NeurIPS'22): frozen ResNet, prior, feature merging, the IPMT layers and the classifiers.

The model class holds its layers, ``forward`` (the paper's overview figure in numbered steps), ``loss``
(``loss.py``), the reference's two optimisers and ``TRACE_KEYS``; the transformer is in ``transformer.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.batch import IGNORE_INDEX, Batch
from fsslab.models.backbones import build_backbone, frozen_stage_runner
from fsslab.models.base import FewShotModel, OptimizerSpec
from fsslab.models.ipmt.loss import ipmt_losses
from fsslab.models.ipmt.transformer import MASKED_LOGIT, IPMTransformer, mask_to_bias
from fsslab.models.layers import conv_relu, foreground_window, masked_average_pool, prior_mask
from fsslab.models.output import FSSOutput

# name -> "shape: meaning" of every entry of ``FSSOutput.trace`` (h, w: feature size = input/8;
# L: num_layers; K: shots; C: hidden_dim; M: deformable heads; P: deformable points).
TRACE_KEYS: dict[str, str] = {
    "prior": "[B,1,h,w]: training-free prior (max cosine of layer4 features to the support foreground, "
             "min-max normalised, mean over shots)",
    "support_fg": "[B,K,h,w]: support foreground the prototypes attend to (nearest-resized, empty/full guarded)",
    "query_ignore": "[B,h,w]: query cells excluded from positions and deformable values (padding, or label 255 "
                    "with reproduce_official)",
    "initial_logits": "[B,2,h,w]: initial classifier logits (bg, fg); its argmax masks the first query layer",
    "final_logits": "[B,2,h,w]: final classifier logits at feature size (FSSOutput.logits is their resize)",
    "query_feat": "[B,C,h,w]: merged query features entering the transformer (the prototypes' space)",
    "support_feat": "[B,K,C,h,w]: merged support features entering the transformer",
    "support_prototypes": "[L,B,C]: intermediate prototype after each support mining layer",
    "query_prototypes": "[L,B,C]: prototype after each query layer (support prototype + query update)",
    "support_attention": "[L,B,K,h,w]: prototype -> support attention of each mining layer (softmax over K*h*w)",
    "query_attention": "[L,B,h,w]: prototype -> query attention of each query layer (softmax over h*w)",
    "support_layer_query_masks": "[L,B,h,w]: query mask logits of each support-mined prototype",
    "query_layer_query_masks": "[L,B,h,w]: query mask logits of each query layer (layer l masks layer l+1)",
    "query_layer_support_masks": "[L,B,K,h,w]: support mask logits of each query layer's prototype",
    "sampling_locations": "[L,B,h*w,M,1,P,2]: deformable sampling points (x, y in [0,1]) of each query layer",
    "sampling_weights": "[L,B,h*w,M,1,P]: deformable attention weights (softmax over P)",
}


def _two_convs(dims: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dims, dims, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                         nn.Conv2d(dims, dims, 3, padding=1, bias=False), nn.ReLU(inplace=True))


def _classifier(dims: int, classes: int = 2) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(dims, dims, 3, padding=1, bias=False), nn.ReLU(inplace=True),
                         nn.Dropout2d(0.1), nn.Conv2d(dims, classes, 1))


def merge_with_vector(conv: nn.Conv2d, feat: torch.Tensor, vector: torch.Tensor,
                      extra: torch.Tensor | None = None) -> torch.Tensor:
    """ReLU(conv1x1(cat[feat, vector broadcast, extra])) without building the concat.

    feat [N,C,h,w], vector [N,C',1,1] (constant over positions: it becomes a per-image bias),
    extra [N,E,h,w] or None. The conv's input channels are ordered [feat, vector, extra].
    """
    c, cv = feat.shape[1], vector.shape[1]
    weight = conv.weight
    out = F.conv2d(feat, weight[:, :c])
    out = out + F.conv2d(vector, weight[:, c:c + cv])  # [N,C_out,1,1] broadcast
    if extra is not None:
        out = out + F.conv2d(extra, weight[:, c + cv:])
    return F.relu(out)


class IPMT(FewShotModel):
    """Intermediate Prototype Mining Transformer (NeurIPS'22), size-agnostic and K-shot.

    backbone:   name for ``build_backbone`` ("resnet50", "resnet101", "resnet_tiny", ...), deep-stem
                ResNet with FrozenBN and torchvision-style dilation (output stride 8); fully frozen as
                in the reference (``train_backbone=False``).
    dilation:   the backbone's dilation layout; ``"torchvision"`` is the reference's. ``"pspnet"`` matches
                a backbone that was itself trained in that layout (the synthetic ImageNet of the tiny configs),
                so that its layer3/layer4 features are the ones it learned.
    hidden_dim: reduced feature / token width (384 in the paper).
    channels_last: run the convolutions on channels_last activations (default; same results).
    reproduce_official: read the query label's 255 cells (as the official eval does) and use its
                int64 initial-mask bias; for parity checks only -- it leaks the label at test time.

    Ablation switches (the paper's variants; all off by default, and off the model is the faithful one):
    num_layers: the number of IPMT layers (1..5; the paper's full model has 5): the trace then holds
                ``num_layers`` support and query prototypes.
    no_query_mining: the prototype is mined from the support only (no intermediate prototype): each query
                layer uses the support-mined prototype p_l as it is, without the prototype <- query
                attention update (that attention is not computed; trace ``query_attention`` is zero and
                ``query_prototypes`` equals ``support_prototypes``).
    no_prior:   the training-free prior is not computed; its channel of the query merge is zero (same
                parameters, so checkpoints stay loadable) and trace ``prior`` is zero.
    no_deep_supervision: only the final and initial Dice terms train the model: no per-layer query/support
                mask BCE (the layers' masks are not computed in training; ``loss`` has no ``bce_*`` terms).
    """

    def __init__(self, backbone: str = "resnet50", pretrained: str | None = None, shot: int = 1,
                 hidden_dim: int = 384, num_layers: int = 5, num_heads: int = 1, deform_points: int = 9,
                 dropout: float = 0.1, reproduce_official: bool = False,
                 dice_weights: tuple[float, float] = (0.7, 0.3), bce_weights: tuple[float, float] = (0.3, 0.7),
                 aux_weight: float = 1.0, sgd_lr_multiplier: float = 15.0, transformer_lr: float = 1e-4,
                 transformer_weight_decay: float = 1e-2, channels_last: bool = True,
                 dilation: str = "torchvision", no_query_mining: bool = False, no_prior: bool = False,
                 no_deep_supervision: bool = False) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"IPMT needs num_layers >= 1, got {num_layers}")
        self.no_query_mining, self.no_prior = bool(no_query_mining), bool(no_prior)
        self.no_deep_supervision = bool(no_deep_supervision)
        self.channels_last = channels_last
        self.shot = shot  # informative only: the forward takes K from the batch
        self.hidden_dim, self.reproduce_official = hidden_dim, reproduce_official
        self.dice_weights, self.bce_weights, self.aux_weight = tuple(dice_weights), tuple(bce_weights), aux_weight
        self.sgd_lr_multiplier = sgd_lr_multiplier
        self.transformer_lr, self.transformer_weight_decay = transformer_lr, transformer_weight_decay

        self.backbone = build_backbone(backbone, pretrained, dilation=dilation, norm="frozen")
        self.backbone.requires_grad_(False)
        channels = self.backbone.out_channels
        mid = channels["layer2"] + channels["layer3"]
        self.support_reduce = conv_relu(mid, hidden_dim, 1, dropout=0.5)
        self.query_reduce = conv_relu(mid, hidden_dim, 1, dropout=0.5)
        self.query_merge = conv_relu(2 * hidden_dim + 1, hidden_dim, 1)  # [query, prototype, prior]
        self.support_merge = conv_relu(2 * hidden_dim, hidden_dim, 1)  # [support, its prototype]
        self.query_residual = _two_convs(hidden_dim)
        self.initial_classifier = _classifier(hidden_dim)
        self.transformer = IPMTransformer(hidden_dim, num_layers, num_heads, deform_points, dropout,
                                          query_mining=not self.no_query_mining)
        self.fusion_reduce = conv_relu(hidden_dim, hidden_dim, 1)
        self.fusion_residual = _two_convs(hidden_dim)
        self.classifier = _classifier(hidden_dim)

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def _backbone_features(self, images: torch.Tensor, layer4_fg: torch.Tensor | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """[N,3,H,W] -> (cat[layer2, layer3] [N,C2+C3,h,w], layer4 [N,C4,h,w]); frozen, no graph.

        layer4_fg: optional [N,H,W] bool foreground. The supports' layer4 only feeds the prior, which
        multiplies it by the (soft) foreground mask, so layer4 is computed on the union bounding box of that
        mask plus layer4's receptive-field radius and is zero elsewhere: exactly the same prior, less work.
        """
        run = frozen_stage_runner(self.backbone)  # frozen BN folded into the convs, weights cached
        layer2 = run("layer2", run("layer1", run("layer0", images)))
        layer3 = run("layer3", layer2)
        window = None if layer4_fg is None else self._layer4_window(layer4_fg, tuple(layer3.shape[-2:]))
        if window is None:
            layer4 = run("layer4", layer3)
        else:
            rows, cols = window
            cropped = run("layer4", layer3[:, :, rows, cols])
            layer4 = cropped.new_zeros(*cropped.shape[:2], *layer3.shape[-2:])
            layer4[:, :, rows, cols] = cropped
        return torch.cat([layer2, layer3], dim=1), layer4

    def _layer4_window(self, fg: torch.Tensor, size: tuple[int, int]) -> tuple[slice, slice] | None:
        """Rows/cols of layer4's input whose outputs cover every cell of the soft (bilinear) foreground at
        ``size`` (union over the batch), or None when that is the whole map or the backbone is not a ResNet."""
        radius = getattr(self, "_layer4_radius", None)
        if radius is None:
            layer4 = getattr(self.backbone, "layer4", None)
            convs = [m for m in layer4.modules() if isinstance(m, nn.Conv2d)] if layer4 is not None else []
            if not convs or any(c.stride != (1, 1) for c in convs):
                radius = -1  # a strided layer4 changes the grid: no window
            else:  # each conv widens the dependency by dilation * (kernel - 1) / 2 cells
                radius = sum(c.dilation[0] * (c.kernel_size[0] - 1) // 2 for c in convs)
            self._layer4_radius = radius
        if radius < 0:
            return None
        soft = F.interpolate(fg.unsqueeze(1).float(), size=size, mode="bilinear", align_corners=True)[:, 0]
        # empty supports: None, the prior is zero whatever layer4 is; keep the plain path
        return foreground_window(soft > 0, halo=radius)

    def _query_ignore(self, batch: Batch, size: tuple[int, int]) -> torch.Tensor:
        """[B,h,w] bool cells excluded from positions / deformable values."""
        if self.reproduce_official:  # the official eval reads the query label (255 = ignore): leakage
            if "query_mask" not in batch:
                raise KeyError("IPMT(reproduce_official=True) reads batch['query_mask'] (its 255 cells) even in "
                               "eval, as the official code does; the batch has none")
            source = (batch["query_mask"] == IGNORE_INDEX)
        elif "query_padding" in batch:
            source = batch["query_padding"]
        else:  # no padding information: nothing is excluded
            img = batch["query_img"]
            return torch.zeros(img.shape[0], *size, dtype=torch.bool, device=img.device)
        return F.interpolate(source.unsqueeze(1).float(), size=size, mode="nearest")[:, 0] > 0.5

    @staticmethod
    def _guarded_support_fg(support_masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[B,K,H,W] labels -> [B,K,h,w] bool foreground (nearest), never empty nor full (reference guards:
        an empty mask gets its 2x2 centre, a full one loses its 4 corners, so softmax has both sides)."""
        b, k = support_masks.shape[:2]
        fg = F.interpolate((support_masks == 1).flatten(0, 1).unsqueeze(1).float(), size=size,
                           mode="nearest").view(b, k, *size) > 0.5
        h, w = size
        centre = torch.zeros(h, w, dtype=torch.bool, device=fg.device)
        centre[h // 2 - 1:h // 2 + 1, w // 2 - 1:w // 2 + 1] = True
        fg = fg | (~fg.flatten(2).any(-1))[..., None, None] & centre
        corners = torch.zeros(h, w, dtype=torch.bool, device=fg.device)
        corners[0, 0] = corners[-1, -1] = corners[0, -1] = corners[-1, 0] = True
        return fg & ~((fg.flatten(2).all(-1))[..., None, None] & corners)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch, trace: bool = False) -> FSSOutput:
        query_img, support_imgs, support_masks = batch["query_img"], batch["support_imgs"], batch["support_masks"]
        b, k = support_imgs.shape[:2]  # query_img (B, 3, H, W); support_imgs (B, K, 3, H, W)
        height, width = query_img.shape[-2:]
        # channels_last end to end: faster convs / pooling on CPU (oneDNN) and GPU, and the [B,C,h,w] maps
        # then share memory with the transformer's [B,h*w,C] tokens (no copies between the two)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format

        # 1. Frozen backbone: mid-level cat[layer2, layer3] and high-level layer4, query and supports
        query_mid, query_high = self._backbone_features(query_img.contiguous(memory_format=fmt))
        support_mid, support_high = self._backbone_features(
            support_imgs.flatten(0, 1).contiguous(memory_format=fmt), layer4_fg=(support_masks == 1).flatten(0, 1))
        size = tuple(query_mid.shape[-2:])
        h, w = size
        query_feat = self.query_reduce(query_mid)  # (B, C, h, w)
        support_feat = self.support_reduce(support_mid)  # (B*K, C, h, w)
        del query_mid, support_mid

        # 2. Support prototypes by masked average pooling, and the training-free prior from layer4;
        # soft (bilinear) foreground for both, as the reference
        soft_fg = F.interpolate((support_masks == 1).flatten(0, 1).unsqueeze(1).to(support_feat.dtype),
                                size=size, mode="bilinear", align_corners=True)  # (B*K, 1, h, w)
        shot_prototypes = masked_average_pool(support_feat, soft_fg)  # (B*K, C, 1, 1)
        global_prototype = shot_prototypes.view(b, k, -1, 1, 1).mean(1)  # (B, C, 1, 1)
        if self.no_prior:  # ablation: the prior's channel of the merge is zero
            prior = query_feat.new_zeros(b, 1, h, w)
        else:
            with torch.no_grad():
                prior = prior_mask(query_high, support_high.view(b, k, *support_high.shape[1:]),
                                   soft_fg.view(b, k, 1, h, w), normalize=True, eps=1e-7,
                                   channel_pool=self.hidden_dim).to(query_feat.dtype)  # (B, 1, h, w)
        del query_high, support_high

        # 3. Merge the query with the prototype and the prior, the supports with their own prototype;
        # the initial classifier's prediction masks the first query layer
        query_feat = merge_with_vector(self.query_merge[0], query_feat, global_prototype, prior)  # (B, C, h, w)
        # the residual branch feeds only the initial classifier; the transformer gets the merged map
        initial_logits = self.initial_classifier(self.query_residual(query_feat) + query_feat)  # (B, 2, h, w)
        support_feat = merge_with_vector(self.support_merge[0], support_feat, shot_prototypes)  # (B*K, C, h, w)
        initial_fg = initial_logits.detach().argmax(1).flatten(1)  # (B, h*w) int64
        if self.reproduce_official:  # reference: (~int64_mask) * -10000 -> +10000 bg / +20000 fg
            initial_bias = ((initial_fg + 1).float() * -MASKED_LOGIT).unsqueeze(1)
        else:
            initial_bias = mask_to_bias(initial_fg == 1)  # (B, 1, h*w)

        # 4. Intermediate prototype mining transformer: each layer mines the prototype from the supports,
        # then activates it on the query; the query features it returns are fused over the layers
        support_fg = self._guarded_support_fg(support_masks, size)  # (B, K, h, w) bool
        query_ignore = self._query_ignore(batch, size)  # (B, h, w) bool
        need_masks = (self.training and not self.no_deep_supervision) or trace
        trace_dict: dict[str, torch.Tensor] | None = {} if trace else None
        fused, masks = self.transformer(query_feat, query_ignore, support_feat.view(b, k, *support_feat.shape[1:]),
                                        support_fg, initial_bias, need_masks=need_masks, trace=trace_dict)

        # 5. Fusion and the final classifier, upsampled to the input size
        fused = self.fusion_reduce(fused)  # (B, C, h, w)
        fused = self.fusion_residual(fused) + fused
        final_logits = self.classifier(fused)  # (B, 2, h, w)
        logits = F.interpolate(final_logits, size=(height, width), mode="bilinear", align_corners=True)

        # 6. Training: the initial logits and every layer's masks for the loss; the trace
        aux: dict[str, torch.Tensor] = {}
        if self.training:
            aux = {"initial_logits": initial_logits}
            if not self.no_deep_supervision:
                aux.update(masks)
        if trace_dict is not None:
            layers = self.transformer.num_layers
            trace_dict.update({
                "prior": prior, "support_fg": support_fg, "query_ignore": query_ignore,
                "initial_logits": initial_logits, "final_logits": final_logits,
                "query_feat": query_feat, "support_feat": support_feat.view(b, k, *support_feat.shape[1:]),
                "support_layer_query_masks": masks["query_masks"][:layers],
                "query_layer_query_masks": masks["query_masks"][layers:],
                "query_layer_support_masks": masks["support_masks"]})
            trace_dict = {name: value.detach() for name, value in trace_dict.items()}
        return FSSOutput(logits=logits, aux=aux, trace=trace_dict)

    # ------------------------------------------------------------------ training
    def loss(self, output: FSSOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """Reference losses: 0.7 Dice(final) + 0.3 Dice(initial) + aux_weight * (0.3 BCE(query masks)
        + 0.7 BCE(support masks)); needs a forward in training mode. ``no_deep_supervision``: the Dice terms only."""
        if "initial_logits" not in output.aux or ("query_masks" not in output.aux and not self.no_deep_supervision):
            raise ValueError("IPMT.loss needs the aux tensors of a training-mode forward (model.train())")
        return ipmt_losses(output.logits, output.aux, batch["query_mask"], batch["support_masks"],
                           self.dice_weights, self.bce_weights, self.aux_weight,
                           deep_supervision=not self.no_deep_supervision)

    def optimizer_specs(self, base_lr: float, weight_decay: float) -> list[OptimizerSpec]:
        """Reference (train.py): SGD over the non-transformer trainable params -- its poly schedule multiplies
        every SGD group by ``scale_lr=15`` (util.poly_learning_rate with index_split=-1) -- and AdamW over the
        transformer at lr 1e-4: weights with weight decay 1e-2, biases without."""
        named = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        head = [p for n, p in named if not n.startswith("transformer.")]
        decayed = [p for n, p in named if n.startswith("transformer.") and "bias" not in n]
        biases = [p for n, p in named if n.startswith("transformer.") and "bias" in n]
        return [
            OptimizerSpec("main", "sgd", [{"params": head, "lr": base_lr * self.sgd_lr_multiplier}],
                          options={"momentum": 0.9, "weight_decay": weight_decay}),
            OptimizerSpec("transformer", "adamw", [
                # constant lr: train.py never applies its poly schedule to the transformer optimiser
                {"params": decayed, "lr": self.transformer_lr, "weight_decay": self.transformer_weight_decay,
                 "poly": False},
                {"params": biases, "lr": self.transformer_lr, "weight_decay": 0.0, "poly": False}],
                options={"weight_decay": 1e-4}),
        ]

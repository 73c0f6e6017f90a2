"""AMFormer (NeurIPS'23): adversarial mining transformer for few-shot segmentation, in plain PyTorch.

Pipeline (feature size h x w = input / 8):
1. Frozen PSPNet base learner (backbone, PPM, conv3x3+BN "embedding"): run once on the query and the
   K masked supports (support pixels outside ``support_masks == 1`` are zeroed; 255 counts as
   background, so box / scribble masks are simply other masks).
2. ``[layer3, layer2]`` reduced to ``hidden_dim`` (query and support convs); support prototypes by
   masked average pooling (bilinear mask, corners aligned), averaged over the K shots.
3. Initial prediction: cosine(prototype, query) / 0.1, values below 0.7 set to 0 (a soft mask).
4. Similarity prior: max over foreground support positions of the cosine with each query position
   (nearest-resized mask, no min-max), for the embedding and layer4; mean over shots; x10 into the
   query fusion conv together with the query features and the prototype.
5. G (``transformer.ObjectMiningTransformer``): pyramid encoding, masked mining with the initial
   prediction, then two refinement passes, each masked by the previous stage's binarised ensemble.
6. After every stage the BAM-style ensemble: softmax meta prediction, both channels mixed with the
   Gram-matrix support-query distance (``gram_fusion``, one 1x1 conv shared by bg and fg), the
   background mixed with the base learner's "any base class" map (``learner_fusion``).
7. Training only: D (``discriminator``) judges part embeddings mined with G's foreground map
   against those mined with the ground truth (see ``discriminator.adversarial_branch``).

K-shot definition (the official code crashes for K > 1; fsslab defines it from the paper and the
code's per-shot averaging): the prototype fed to the initial prediction and to the query fusion is
the mean of the K per-shot prototypes; the similarity prior is the mean of the K per-shot maps;
the Gram distance is computed per shot and reweighted as in BAM (``shot_reweight``: sort the K
distances, 1x1 conv K -> 2 -> K, undo the sort, softmax over shots); G's masks are query masks
(one per episode). The official AMFormer K-shot gather is a no-op (``idx1.gather(1, idx2)`` is the
identity permutation, leaving the weights in sorted order); ``reproduce_official=True`` keeps that.

Weak supports (box / scribble ``support_masks``) need nothing special: only ``== 1`` is foreground.
``query_padding`` / ``support_padding`` are not used (the reference has no padding input either).

Inference never reads ``query_mask``. ``reproduce_official=True`` also runs the adversarial branch
in eval when ``query_mask`` is in the batch and draws the diversity channels with Python's
``random.sample``, as the official eval forward does (its logits do not depend on either).

Layout (as ``fsslab.models.ipmt``): the class below holds the layers, ``forward`` in the numbered steps above,
``loss`` and the G/D schedule (``loss.py``), the reference's two optimisers (D's groups in ``discriminator.py``)
and ``TRACE_KEYS``. G is ``transformer.py``; D and the adversarial branch ``discriminator.py``; the training-free
priors ``priors.py``; the base learner's embedding ``fast_head.py``; D on given masks ``analysis.py``; official
checkpoints ``official.py``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.batch import Batch
from fsslab.errors import ConfigError
from fsslab.models.amformer.analysis import score_masks
from fsslab.models.amformer.discriminator import PartDiscriminator, judge_generator
from fsslab.models.amformer.fast_head import pyramid_embedding
from fsslab.models.amformer.loss import amformer_losses, gd_objectives
from fsslab.models.amformer.priors import foreground_similarity, gram_matrix, target_class_probability
from fsslab.models.amformer.transformer import ObjectMiningTransformer
from fsslab.models.backbones import frozen_stage_runner
from fsslab.models.base import FewShotModel, OptimizerSpec
from fsslab.models.layers import conv_relu, foreground_window, masked_average_pool
from fsslab.models.output import FSSOutput
from fsslab.models.pspnet import PSPNet, load_pspnet_weights

INIT_TEMPERATURE = 0.1
INIT_THRESHOLD = 0.7  # initial-prediction values below this are set to 0
REFINE_THRESHOLD = 0.5
SIMILARITY_SCALE = 10.0

TRACE_KEYS: dict[str, str] = {
    "initial_prediction": "[B,1,h,w]: cosine(prototype, query)/0.1 with values < 0.7 set to 0 (G's first mask)",
    "similarity": "[B,2,h,w]: max-cosine prior of the base embedding (ch 0) and layer4 (ch 1), shot mean",
    "meta_logits": "[B,3,2,h,w]: G's logits after mining (0) and the two refinement passes (1, 2); "
                   "3 = 1 + mining_passes",
    "refine_masks": "[B,2,h,w]: binary masks that drove refinement passes 1 and 2 (from the ensemble); "
                    "2 = mining_passes",
    "ensemble_logits": "[B,3,2,h,w]: BAM-style ensemble after each stage; [:, -1] is the final output",
    "mined_mask": "[B,1,h,w]: G's final foreground probability, softmax(meta_logits[:, -1])[:, 1]",
    "base_logits": "[B,n_base+1,h,w]: frozen base learner (PSPNet) logits for the query",
    "base_map": "[B,1,h,w]: base learner's probability of any base class (background evidence)",
    "gram_distance": "[B,K]: ||Gram(query layer2) - Gram(support layer2)||_F / C per shot",
    "shot_weights": "[B,K]: softmax shot weights of the Gram distances (1/K for a model built with shot=1)",
    "gram_estimate": "[B]: weighted Gram distance that enters the ensemble",
    "gram_fusion_weight": "[2]: ensemble weights (meta probability, Gram estimate), shared by bg and fg",
    "learner_fusion_weight": "[2]: ensemble weights (meta background, base_map) of the final background",
    "fused_features": "[B,3,C,h,w]: G's fused query maps after mining and each refinement (D's inputs)",
    "mining_attention_0": "[B,h/4,w/4]: mask-weighted attention score per query position, coarsest level",
    "mining_attention_1": "[B,h/2,w/2]: same, middle level",
    "mining_attention_2": "[B,h,w]: same, finest level (targets of the distillation loss)",
    "part_maps_fake": "training only, [B,3,N,h,w]: part attention maps mined with G's foreground map",
    "part_maps_real": "training only, [B,3,N,h,w]: part attention maps mined with the ground truth",
    "d_score_fake": "training only, [B,3]: D's P(real) of the judged fake part, per level",
    "d_score_real": "training only, [B,3]: D's P(real) of the judged real part, per level",
}


def up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class AMFormer(FewShotModel):
    """AMFormer for fsslab: ``forward(batch, trace)``, ``loss``, G/D parameter sets, optimisers and schedule.

    backbone: "resnet50" | "resnet101" | "vgg16" | "resnet_tiny"; pretrained: a stage-1 PSPNet checkpoint
    (fsslab or official BAM layout) or None; n_base_classes: 15 PASCAL / 60 COCO / 15 synthetic;
    hidden_dim: width of the reduced layer2+3 features (256); transformer_dim, transformer_heads,
    mining_heads, sr_ratios, mlp_ratio: G (64, (2,4,8), 2, (4,2,1), 4); parts, part_heads: D (14, 4);
    kshot_hidden: width of the K-shot reweighting (yaml ``kshot_trans_dim`` = 2); aux_weight1 weighs
    the attention distillation, aux_weight2 the base-learner CE (yaml, both 1.0); freeze_bn keeps
    every BatchNorm in eval during training (yaml ``fix_bn: True``); channels_last stores the frozen base
    learner in channels_last, so that every convolution runs on channels_last activations without the
    caller converting anything (faster on CPU oneDNN and with GPU tensor cores; the same function).

    Ablation switches (the paper's variants; all off by default, and off the model is the faithful one):
    no_discriminator: "w/o D": no detail-mining transformer D (no parameters, no optimiser, no adversarial or
        diversity loss terms); G keeps its schedule (it steps on even iterations only, as many G steps as the
        full model, so that the ablation removes D and nothing else).
    no_ensemble: "w/o base-learner ensemble": every stage's output is G's own softmax probability (the
        ensemble at its initialisation, frozen): no Gram-distance or base-learner fusion parameters, and the
        base learner's "any base class" map does not reach the output (it still provides the features).
    mining_passes: G's refinement passes after the first mining (0, 1 or 2; the paper's model has 2): the
        trace then holds ``1 + mining_passes`` stages and D judges as many levels.
    Box supports are not a model switch: ``data.support_label=box`` / ``eval.support_label=box``.
    """

    def __init__(self, backbone: str = "resnet50", pretrained: str | None = None, n_base_classes: int = 15,
                 shot: int = 1, hidden_dim: int = 256, transformer_dim: int = 64,
                 transformer_heads: tuple[int, ...] = (2, 4, 8), mining_heads: int = 2,
                 sr_ratios: tuple[int, ...] = (4, 2, 1), mlp_ratio: int = 4, parts: int = 14, part_heads: int = 4,
                 kshot_hidden: int = 2, aux_weight1: float = 1.0, aux_weight2: float = 1.0,
                 adversarial_weight: float = 0.1, adversarial_period: int = 5, adversarial_max_loss: float = 11.0,
                 diversity_weight: float = 0.01, head_lr_multiplier: float = 10.0, freeze_bn: bool = True,
                 train_part_queries: bool = False, reproduce_official: bool = False,
                 base_head_channels: int = 512, channels_last: bool = True, no_discriminator: bool = False,
                 no_ensemble: bool = False, mining_passes: int = 2) -> None:
        super().__init__()
        if mining_passes not in (0, 1, 2):
            raise ConfigError(f"AMFormer mining_passes must be 0, 1 or 2 (the paper's G has 2), got {mining_passes}")
        self.no_discriminator, self.no_ensemble = bool(no_discriminator), bool(no_ensemble)
        self.mining_passes = int(mining_passes)
        self.shot, self.reproduce_official = shot, reproduce_official
        self.base_learner = PSPNet(backbone, n_classes=n_base_classes + 1, norm="batch",
                                   head_channels=base_head_channels)
        if pretrained is not None:
            load_pspnet_weights(self.base_learner, pretrained)
        self.base_learner.requires_grad_(False)
        chans = self.base_learner.backbone.out_channels
        feat_dim = chans["layer2"] + chans["layer3"]
        self.reduce_query = conv_relu(feat_dim, hidden_dim, 1, dropout=0.5)
        self.reduce_support = conv_relu(feat_dim, hidden_dim, 1, dropout=0.5)
        self.query_fusion = conv_relu(2 * hidden_dim + 2, transformer_dim, 1)  # [query, prototype, 2 priors]
        self.generator = ObjectMiningTransformer(transformer_dim, tuple(transformer_heads), mining_heads,
                                                 sr_ratios=tuple(sr_ratios), mlp_ratio=mlp_ratio,
                                                 refinements=self.mining_passes)
        self.discriminator = None
        if not self.no_discriminator:  # one D level per stage of G
            self.discriminator = PartDiscriminator(transformer_dim, 1 + self.mining_passes, parts, part_heads,
                                                   train_part_queries=train_part_queries)
        # [w_meta, w_estimate] and [w_meta_bg, w_base]: official init [1, 0] (pure meta learner)
        self.gram_fusion = self.learner_fusion = None
        if not self.no_ensemble:
            self.gram_fusion = nn.Conv2d(2, 1, 1, bias=False)
            self.learner_fusion = nn.Conv2d(2, 1, 1, bias=False)
            with torch.no_grad():
                self.gram_fusion.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
                self.learner_fusion.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
        self.shot_reweight = None
        if shot > 1 and not self.no_ensemble:  # the K-shot reweighting only weighs the ensemble's Gram distance
            self.shot_reweight = nn.Sequential(nn.Conv2d(shot, kshot_hidden, 1), nn.ReLU(inplace=True),
                                               nn.Conv2d(kshot_hidden, shot, 1))
        self.aux_weight1, self.aux_weight2 = aux_weight1, aux_weight2
        self.adversarial_weight, self.adversarial_period = adversarial_weight, adversarial_period
        self.adversarial_max_loss, self.diversity_weight = adversarial_max_loss, diversity_weight
        self.head_lr_multiplier, self.freeze_bn = head_lr_multiplier, freeze_bn
        if channels_last:  # base_features follows the first conv's layout (load_state_dict keeps it)
            self.base_learner.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> AMFormer:
        """The base learner always stays in eval; with ``freeze_bn`` so does every BatchNorm (``fix_bn``)."""
        super().train(mode)
        self.base_learner.eval()
        if mode and self.freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    # ------------------------------------------------------------------ parameters
    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        """D: part attention + part classifiers (trainable ones); none with ``no_discriminator``."""
        if self.discriminator is None:
            return iter(())
        return (p for p in self.discriminator.parameters() if p.requires_grad)

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """G side: every trainable parameter outside D (the base learner is frozen)."""
        d_ids = {id(p) for p in self.discriminator_parameters()}
        return (p for p in self.parameters() if p.requires_grad and id(p) not in d_ids)

    def optimizer_specs(self, base_lr: float, weight_decay: float) -> list[OptimizerSpec]:
        """The reference's two optimisers with the learning rates its poly schedule actually applies.

        generator: AdamW (betas 0.9/0.999) - G at base_lr; reductions, query fusion, Gram and learner
        fusion (and the K-shot reweighting, commented out in the reference) at 10x.
        discriminator: Adam - part-attention weights at base_lr; part-attention biases, classifier
        weights and biases at 10x (``PartDiscriminator.optimizer_groups``: 1/10/10/10 is what the reference
        trains, whatever its ``optimizer_D`` says).
        """
        def trainable(module: nn.Module | None) -> list[nn.Parameter]:
            return [] if module is None else [p for p in module.parameters() if p.requires_grad]

        head = base_lr * self.head_lr_multiplier
        g_groups = [{"params": trainable(self.generator), "lr": base_lr}]
        for module in (self.reduce_support, self.reduce_query, self.query_fusion, self.gram_fusion,
                       self.learner_fusion, self.shot_reweight):
            if trainable(module):
                g_groups.append({"params": trainable(module), "lr": head})
        covered = {id(p) for g in g_groups for p in g["params"]}
        missing = [n for n, p in self.named_parameters() if p.requires_grad and id(p) not in covered
                   and not n.startswith("discriminator.")]
        if missing:  # every G parameter must be optimised by exactly one group
            raise RuntimeError(f"generator parameters without an optimiser group: {missing}")
        specs = [OptimizerSpec("generator", "adamw", g_groups, objective="generator",
                               options={"betas": (0.9, 0.999), "weight_decay": weight_decay})]
        if self.discriminator is not None:
            specs.append(OptimizerSpec("discriminator", "adam", self.discriminator.optimizer_groups(base_lr, head),
                                       objective="discriminator", options={"weight_decay": weight_decay}))
        return specs

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def base_features(self, images: torch.Tensor, support_fg: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Frozen backbone + PPM + embedding on [N,3,H,W]: layer2, layer3, layer4, embedding.

        Follows the model's memory format (``model.to(memory_format=torch.channels_last)``); the
        embedding skips convolving the upsampled pyramid maps (``fast_head``, same values).
        support_fg: optional [S,H,W] bool foreground of the last S images (the supports). Their embedding
        only feeds the similarity prior, which reads it on that foreground (nearest-resized), so it is
        computed on the union bounding box of that foreground and is 0 elsewhere: same prior, less work.
        """
        psp = self.base_learner
        first_conv = next(m for m in psp.backbone.modules() if isinstance(m, nn.Conv2d))
        if first_conv.weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        run = frozen_stage_runner(psp.backbone)  # folded, cached and fused when frozen (it is, outside tests)
        feats, x = {}, images
        for stage in psp.backbone.stages:
            x = feats[stage] = run(stage, x)
        window = None
        if support_fg is not None:
            fg_small = F.interpolate(support_fg.unsqueeze(1).float(), size=x.shape[-2:], mode="nearest")[:, 0] > 0.5
            window = foreground_window(fg_small)
        if window is None:
            feats["embedding"] = pyramid_embedding(psp.ppm, psp.head, x)
        else:
            n_query = x.shape[0] - support_fg.shape[0]
            feats["embedding"] = torch.cat([pyramid_embedding(psp.ppm, psp.head, x[:n_query]),
                                            pyramid_embedding(psp.ppm, psp.head, x[n_query:], window)])
        return feats

    def base_logits(self, embedding: torch.Tensor) -> torch.Tensor:
        """Base-learner classifier on the query embedding (its dropout is active in training, as in the reference)."""
        head = self.base_learner.head
        with torch.no_grad():
            return head.out(F.dropout2d(F.relu(embedding), head.dropout.p, training=self.training))

    def shot_weights(self, distance: torch.Tensor) -> torch.Tensor:
        """[B,K] per-shot Gram distances -> [B,K] weights (softmax over shots; 1/K without reweighting)."""
        if self.shot_reweight is None:  # a 1-shot model given K supports averages them
            return torch.full_like(distance, 1.0 / distance.shape[1])
        ranked, order = distance.sort(dim=1)
        weight = self.shot_reweight(ranked[:, :, None, None])[:, :, 0, 0]  # in sorted order
        if not self.reproduce_official:  # back to shot order (BAM); official AMFormer leaves it sorted
            weight = weight.gather(1, order.argsort(dim=1))
        return weight.softmax(dim=1)

    def ensemble(self, logits: torch.Tensor, estimate: torch.Tensor, base_map: torch.Tensor) -> torch.Tensor:
        """Meta logits [B,2,h,w] -> ensembled [B,2,h,w] (merged background, Gram-adjusted foreground);
        ``no_ensemble``: the meta probability itself."""
        prob = logits.softmax(dim=1)
        if self.no_ensemble:
            return prob
        est = estimate.view(-1, 1, 1, 1).expand_as(prob[:, :1])
        bg = self.gram_fusion(torch.cat([prob[:, :1], est], dim=1))
        fg = self.gram_fusion(torch.cat([prob[:, 1:], est], dim=1))
        return torch.cat([self.learner_fusion(torch.cat([bg, base_map], dim=1)), fg], dim=1)

    @staticmethod
    def refine_mask(final: torch.Tensor) -> torch.Tensor:
        """[B,2,h,w] -> [B,1,h,w] binary: fg > 0.5 where the foreground also wins."""
        bg, fg = final[:, :1], final[:, 1:]
        return ((fg > REFINE_THRESHOLD) & ~(bg > fg)).to(final.dtype)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: Batch, trace: bool = False) -> FSSOutput:
        query_img, support_imgs = batch["query_img"], batch["support_imgs"]  # (B, 3, H, W), (B, K, 3, H, W)
        b, k = support_imgs.shape[:2]
        if k != self.shot and self.shot_reweight is not None:
            raise ConfigError(f"AMFormer was built for shot={self.shot} (shot_reweight), got {k} support images")
        size = query_img.shape[-2:]

        # 1. Frozen base learner on the query and the K masked supports, in one batch
        fg = (batch["support_masks"] == 1).to(query_img.dtype).flatten(0, 1).unsqueeze(1)  # (B*K, 1, H, W)
        images = torch.cat([query_img, support_imgs.flatten(0, 1) * fg], dim=0)  # (B + B*K, 3, H, W)
        feats = self.base_features(images, support_fg=fg[:, 0] > 0)
        q = {n: f[:b] for n, f in feats.items()}  # name -> (B, C_name, h, w)
        s = {n: f[b:] for n, f in feats.items()}  # name -> (B*K, C_name, h, w)
        if q["layer2"].shape[-2:] != q["layer3"].shape[-2:]:  # VGG: layer2 at stride 8, layer3 at 16
            q["layer2"] = up(q["layer2"], q["layer3"].shape[-2:])
            s["layer2"] = up(s["layer2"], s["layer3"].shape[-2:])
        hw = q["layer3"].shape[-2:]
        self.generator.check_input_size(size, hw)

        # 2. Reduced [layer3, layer2] features; support prototype by masked average pooling, mean over shots
        query_feat = self.reduce_query(torch.cat([q["layer3"], q["layer2"]], dim=1))  # (B, D, h, w)
        supp_feat = self.reduce_support(torch.cat([s["layer3"], s["layer2"]], dim=1))  # (B*K, D, h, w)
        proto_shots = masked_average_pool(supp_feat, up(fg, hw), eps=5e-4)  # (B*K, D, 1, 1)
        proto = proto_shots.view(b, k, -1).mean(dim=1)  # (B, D)

        # 3. Initial prediction: cosine(prototype, query) / 0.1, weak values set to 0
        init = torch.einsum("bc,bcl->bl", F.normalize(proto, dim=1), F.normalize(query_feat.flatten(2), dim=1))
        init = (init / INIT_TEMPERATURE).view(b, 1, *hw)  # (B, 1, h, w)
        init = init.masked_fill(init < INIT_THRESHOLD, 0.0)

        # 4. Similarity prior of the embedding and of layer4 (max cosine to the support foreground)
        similarity = []
        for name in ("embedding", "layer4"):
            hq = q[name].shape[-2:]
            fg_small = F.interpolate(fg, size=hq, mode="nearest").view(b, k, -1)  # (B, K, hq*wq)
            sim = foreground_similarity(q[name], s[name].view(b, k, *s[name].shape[1:]), fg_small)  # (B, 1, hq, wq)
            similarity.append(sim if hq == hw else up(sim, hw))
        similarity = torch.cat(similarity, dim=1).to(query_feat.dtype)  # (B, 2, h, w)

        # 5. Query fusion (query, prototype, x10 prior) and G's pyramid encoding
        fused_in = torch.cat([query_feat, proto[:, :, None, None].expand(-1, -1, *hw),
                              similarity * SIMILARITY_SCALE], dim=1)  # (B, 2D + 2, h, w)
        pyramid = self.generator.encode(self.query_fusion(fused_in))  # 3 levels of (B, E, h/2^i, w/2^i)

        # 6. Ensemble inputs: the base learner's "any base class" map and the Gram-matrix distance
        base_logits = self.base_logits(q["embedding"])  # (B, n_base + 1, h, w)
        base_prob = base_logits.softmax(dim=1)
        base_map = base_prob[:, 1:].sum(dim=1, keepdim=True)  # (B, 1, h, w)
        if self.training and "query_base_mask" in batch:
            base_map = base_map - target_class_probability(batch["query_mask"], batch["query_base_mask"], base_prob)
        grams_q = gram_matrix(q["layer2"])  # (B, C2, C2)
        grams_s = gram_matrix(s["layer2"]).view(b, k, *grams_q.shape[1:])  # (B, K, C2, C2)
        distance = (grams_q[:, None] - grams_s).norm(dim=(2, 3)) / grams_q.shape[-1]  # (B, K): / ||ones(C,C)||
        weights = self.shot_weights(distance)  # (B, K)
        estimate = (weights * distance).sum(dim=1)  # (B,)

        # 7. G mines with the initial prediction, then refines twice with the previous ensemble's binary mask
        stage_logits, finals, masks, fused_maps = [], [], [], []
        logits, attn_weights, fused = self.generator.mine(pyramid, init, similarity)  # (B, 2, h, w), ...
        for stage in range(1 + self.generator.refinements):
            if stage > 0:
                masks.append(self.refine_mask(finals[-1]))  # (B, 1, h, w)
                logits, _, fused = self.generator.refine(stage - 1, fused, masks[-1], similarity)
            stage_logits.append(logits)  # (B, 2, h, w)
            fused_maps.append(fused)  # (B, E, h, w)
            finals.append(self.ensemble(logits, estimate, base_map))  # (B, 2, h, w)
        final = finals[-1]

        # 8. Output at input size; D judges G's parts against the ground truth's (training, or the official eval)
        out = FSSOutput(up(final, size))  # (B, 2, H, W)
        out.aux.update(meta_logits=up(stage_logits[-1], size), base_logits=up(base_logits, size),
                       stage_logits=[up(x, size) for x in stage_logits], attention_weights=attn_weights)
        adversarial = None
        if "query_mask" in batch and (self.training or self.reproduce_official) and self.discriminator is not None:
            adversarial = judge_generator(self.discriminator, fused_maps, final, batch["query_mask"],
                                          python_rng=self.reproduce_official)
            out.aux.update({n: v for n, v in adversarial.items() if not n.startswith(("part_maps", "d_score"))})
        if trace:
            out.trace = self._trace(init, similarity, stage_logits, masks, finals, base_logits, base_map,
                                    distance, weights, estimate, attn_weights, fused_maps, adversarial)
        return out

    def _trace(self, init, similarity, stage_logits, masks, finals, base_logits, base_map, distance, weights,
               estimate, attn_weights, fused_maps, adversarial) -> dict[str, torch.Tensor]:
        refine_masks = torch.cat(masks, 1) if masks else init.new_zeros(init.shape[0], 0, *init.shape[-2:])
        t = {"initial_prediction": init, "similarity": similarity,
             "meta_logits": torch.stack(stage_logits, 1), "refine_masks": refine_masks,
             "ensemble_logits": torch.stack(finals, 1), "mined_mask": stage_logits[-1].softmax(1)[:, 1:],
             "base_logits": base_logits, "base_map": base_map, "gram_distance": distance,
             "shot_weights": weights, "gram_estimate": estimate,
             "fused_features": torch.stack(fused_maps, 1)}
        if self.no_ensemble:  # the ensemble frozen at its initialisation: [1, 0] (pure meta learner)
            t["gram_fusion_weight"] = t["learner_fusion_weight"] = init.new_tensor([1.0, 0.0])
        else:
            t["gram_fusion_weight"] = self.gram_fusion.weight.view(2)
            t["learner_fusion_weight"] = self.learner_fusion.weight.view(2)
        for level, weight in enumerate(attn_weights):
            t[f"mining_attention_{level}"] = weight
        if adversarial is not None:
            t.update({n: adversarial[n] for n in ("part_maps_fake", "part_maps_real", "d_score_fake",
                                                  "d_score_real")})
        return {n: v.detach() for n, v in t.items()}

    # ------------------------------------------------------------------ losses and schedule
    def loss(self, output: FSSOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """Every component; ``total`` = main + aux_weight1 * distillation + aux_weight2 * base_ce (what each term
        is: ``loss.amformer_losses``). ``step_objectives`` combines them as the reference's train.py."""
        return amformer_losses(output.logits, output.aux, batch["query_mask"], batch.get("query_base_mask"),
                               self.aux_weight1, self.aux_weight2)

    def step_objectives(self, losses: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
        """train.py's G/D schedule (``loss.gd_objectives``); ``iteration`` is the batch index (the reference uses
        the index within the epoch): even iterations step G, odd ones D, every ``adversarial_period``-th G step
        weighs in the adversarial loss (or steps nothing when it exceeds ``adversarial_max_loss``)."""
        if self.no_discriminator:  # G keeps its schedule (even iterations), odd ones step nothing
            return {"generator": losses["total"]} if iteration % 2 == 0 else {}
        return gd_objectives(losses, iteration, self.adversarial_period, self.adversarial_weight,
                             self.adversarial_max_loss, self.diversity_weight)

    # ------------------------------------------------------------------ analysis
    def discriminator_scores(self, features_or_batch: Mapping[str, torch.Tensor] | torch.Tensor,
                             masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """How D judges arbitrary foreground masks for an episode (eval-safe: no grads, no dropout).

        features_or_batch: an episode batch (G runs on it; ``query_mask`` is not read) or G's fused
        maps [B,3,C,h,w] (trace ``fused_features``). masks: [B,H,W] or [B,M,H,W] soft/binary masks at
        any resolution (bilinearly resized to the feature size). Returns ``score`` [B,M,3] (D's P(real)
        averaged over parts), ``part_scores`` [B,M,3,N] and ``part_maps`` [B,M,3,N,h,w] (``analysis.score_masks``).
        """
        return score_masks(self, features_or_batch, masks)

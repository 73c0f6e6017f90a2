"""``AMFormer``: the fsslab model contract (losses, G/D optimisers and schedule, trace, D probing) over the network."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.models.amformer.loss import attention_distillation, segmentation_ce
from fsslab.models.amformer.network import AMFormerNetwork
from fsslab.models.base import OptimizerSpec
from fsslab.models.output import FSSOutput

TRACE_KEYS: dict[str, str] = {
    "initial_prediction": "[B,1,h,w]: cosine(prototype, query)/0.1 with values < 0.7 set to 0 (G's first mask)",
    "similarity": "[B,2,h,w]: max-cosine prior of the base embedding (ch 0) and layer4 (ch 1), shot mean",
    "meta_logits": "[B,3,2,h,w]: G's logits after mining (0) and the two refinement passes (1, 2)",
    "refine_masks": "[B,2,h,w]: binary masks that drove refinement passes 1 and 2 (from the ensemble)",
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


class AMFormer(AMFormerNetwork):
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
    """

    def __init__(self, backbone: str = "resnet50", pretrained: str | None = None, n_base_classes: int = 15,
                 shot: int = 1, hidden_dim: int = 256, transformer_dim: int = 64,
                 transformer_heads: tuple[int, ...] = (2, 4, 8), mining_heads: int = 2,
                 sr_ratios: tuple[int, ...] = (4, 2, 1), mlp_ratio: int = 4, parts: int = 14, part_heads: int = 4,
                 kshot_hidden: int = 2, aux_weight1: float = 1.0, aux_weight2: float = 1.0,
                 adversarial_weight: float = 0.1, adversarial_period: int = 5, adversarial_max_loss: float = 11.0,
                 diversity_weight: float = 0.01, head_lr_multiplier: float = 10.0, freeze_bn: bool = True,
                 train_part_queries: bool = False, reproduce_official: bool = False,
                 base_head_channels: int = 512, channels_last: bool = True) -> None:
        super().__init__(backbone, pretrained, n_base_classes, shot, hidden_dim, transformer_dim,
                         tuple(transformer_heads), mining_heads, tuple(sr_ratios), mlp_ratio, parts, part_heads,
                         kshot_hidden, train_part_queries, reproduce_official, base_head_channels)
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
        """D: part attention + part classifiers (trainable ones)."""
        return (p for p in self.discriminator.parameters() if p.requires_grad)

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        """G side: every trainable parameter outside D (the base learner is frozen)."""
        d_ids = {id(p) for p in self.discriminator.parameters()}
        return (p for p in self.parameters() if p.requires_grad and id(p) not in d_ids)

    def optimizer_specs(self, base_lr: float, weight_decay: float) -> list[OptimizerSpec]:
        """The reference's two optimisers with the learning rates its poly schedule actually applies.

        generator: AdamW (betas 0.9/0.999) - G at base_lr; reductions, query fusion, Gram and learner
        fusion (and the K-shot reweighting, commented out in the reference) at 10x.
        discriminator: Adam - part-attention weights at base_lr; part-attention biases, classifier
        weights and biases at 10x. (``optimizer_D`` builds them with 1/2/2/4x, but the reference's
        ``poly_learning_rate(index_split=0)`` resets every group after the first to 10x before the
        first step, so 1/10/10/10 is what trains.)
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

        named = [(n, p) for n, p in self.discriminator.named_parameters() if p.requires_grad]
        part = [(n, p) for n, p in named if n.startswith("part_attention.")]
        cls = [(n, p) for n, p in named if n.startswith("classifiers.")]
        d_groups = [{"params": [p for n, p in part if not n.endswith("bias")], "lr": base_lr},
                    {"params": [p for n, p in part if n.endswith("bias")], "lr": head},
                    {"params": [p for n, p in cls if n.endswith("weight")], "lr": head},
                    {"params": [p for n, p in cls if n.endswith("bias")], "lr": head}]
        return [OptimizerSpec("generator", "adamw", g_groups, objective="generator",
                              options={"betas": (0.9, 0.999), "weight_decay": weight_decay}),
                OptimizerSpec("discriminator", "adam", [g for g in d_groups if g["params"]],
                              objective="discriminator", options={"weight_decay": weight_decay})]

    # ------------------------------------------------------------------ losses and schedule
    def loss(self, output: FSSOutput, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Every component; ``total`` = main + aux_weight1 * distillation + aux_weight2 * base_ce.

        main = CE(final) + mean CE of G's three stage logits (the reference's ``main_loss + aux_loss1``);
        distillation = attention distillation / 3 (its ``aux_loss1``); base_ce: base learner CE against
        ``query_base_mask`` (its ``aux_loss2``; constant w.r.t. the trainable parameters: the base
        learner is frozen). In training: adversarial_g, adversarial_d, diversity (each averaged
        over D's 3 levels). ``step_objectives`` combines them as the reference's train.py.
        """
        target = batch["query_mask"]
        aux = output.aux
        final_ce = segmentation_ce(output.logits, target)
        stage_ce = torch.stack([segmentation_ce(x, target) for x in aux["stage_logits"]]).mean()
        weights = aux["attention_weights"]
        losses = {"final_ce": final_ce, "stage_ce": stage_ce, "main": final_ce + stage_ce,
                  "distillation": attention_distillation(target, weights) / len(weights)}
        if "query_base_mask" in batch:
            losses["base_ce"] = segmentation_ce(aux["base_logits"], batch["query_base_mask"])
        else:
            losses["base_ce"] = output.logits.new_zeros(())
        for name in ("adversarial_g", "adversarial_d", "diversity"):
            if name in aux:
                losses[name] = aux[name]
        losses["total"] = losses["main"] + self.aux_weight1 * losses["distillation"] + \
            self.aux_weight2 * losses["base_ce"]
        return losses

    def step_objectives(self, losses: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
        """train.py's schedule; ``iteration`` is the batch index (the reference uses the index within the epoch).

        Even iterations step G: ``total + 1e-9 * adversarial_g``, except every ``adversarial_period``-th
        (``iteration % 5 == 4``) where the adversarial weight is 0.1 if ``adversarial_g <= 11`` and
        nothing is stepped otherwise. Odd iterations step D: ``adversarial_d + 0.01 * diversity``.
        """
        if "adversarial_g" not in losses:  # no adversarial branch (e.g. eval): plain segmentation step
            return {"generator": losses["total"]}
        if iteration % 2 == 1:
            return {"discriminator": losses["adversarial_d"] + self.diversity_weight * losses["diversity"]}
        if iteration % self.adversarial_period != self.adversarial_period - 1:
            return {"generator": losses["total"] + 1e-9 * losses["adversarial_g"]}
        if float(losses["adversarial_g"].detach()) <= self.adversarial_max_loss:
            return {"generator": losses["total"] + self.adversarial_weight * losses["adversarial_g"]}
        return {}

    # ------------------------------------------------------------------ analysis
    @torch.no_grad()
    def discriminator_scores(self, features_or_batch: Mapping[str, torch.Tensor] | torch.Tensor,
                             masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """How D judges arbitrary foreground masks for an episode (eval-safe: no grads, no dropout).

        features_or_batch: an episode batch (G runs on it; ``query_mask`` is not read) or G's fused
        maps [B,3,C,h,w] (trace ``fused_features``). masks: [B,H,W] or [B,M,H,W] soft/binary masks at
        any resolution (bilinearly resized to the feature size). Returns ``score`` [B,M,3] (D's P(real)
        averaged over parts), ``part_scores`` [B,M,3,N] and ``part_maps`` [B,M,3,N,h,w].
        """
        was_training = self.training
        self.eval()
        try:
            if isinstance(features_or_batch, Mapping):
                episode = {k: v for k, v in features_or_batch.items() if k != "query_mask"}
                features = self.forward(episode, trace=True).trace["fused_features"]
            else:
                features = features_or_batch
            masks = masks.unsqueeze(1) if masks.dim() == 3 else masks
            b, m = masks.shape[:2]
            levels = features.shape[1]
            feats = features.unsqueeze(1).expand(-1, m, -1, -1, -1, -1).flatten(0, 1)  # [B*M,3,C,h,w]
            small = F.interpolate(masks.flatten(0, 1).unsqueeze(1).float(), size=features.shape[-2:],
                                  mode="bilinear", align_corners=True).to(features.dtype)
            scores, maps = [], []
            for level in range(levels):
                parts, part_maps = self.discriminator.parts(level, feats[:, level], small)
                scores.append(self.discriminator.score(level, parts).squeeze(-1))  # [B*M,N]
                maps.append(part_maps)
            part_scores = torch.stack(scores, 1).view(b, m, levels, -1)
            return {"score": part_scores.mean(-1), "part_scores": part_scores,
                    "part_maps": torch.stack(maps, 1).view(b, m, levels, *maps[0].shape[1:])}
        finally:
            self.train(was_training)

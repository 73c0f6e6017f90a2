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
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.errors import ConfigError
from fsslab.models.amformer.discriminator import PartDiscriminator, adversarial_branch
from fsslab.models.amformer.fast_head import pyramid_embedding
from fsslab.models.amformer.transformer import ObjectMiningTransformer
from fsslab.models.base import FewShotModel
from fsslab.models.layers import masked_average_pool, prior_mask
from fsslab.models.output import FSSOutput
from fsslab.models.pspnet import PSPNet, load_pspnet_weights

INIT_TEMPERATURE = 0.1
INIT_THRESHOLD = 0.7  # initial-prediction values below this are set to 0
REFINE_THRESHOLD = 0.5
SIMILARITY_SCALE = 10.0


def up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def gram_matrix(feat: torch.Tensor) -> torch.Tensor:
    """[N,C,h,w] -> [N,C,C] channel-cosine Gram matrix (eps 1e-7 as the reference), always in fp32.

    The Gram distance is one scalar per episode that shifts every ensemble output: under autocast
    it is kept in fp32 (bf16 would round cosines near 1 to 3 digits).
    """
    with torch.autocast(feat.device.type, enabled=False):
        flat = feat.flatten(2).float()
        norm = flat.norm(dim=2, keepdim=True)  # [N,C,1]
        return torch.bmm(flat, flat.transpose(1, 2)) / (norm * norm.transpose(1, 2) + 1e-7)


def foreground_similarity(query: torch.Tensor, support: torch.Tensor, fg: torch.Tensor) -> torch.Tensor:
    """Max cosine over masked support positions, mean over shots: [B,1,h,w].

    query [B,C,h,w]; support [B,K,C,hs,ws]; fg [B,K,hs*ws] binary. Only the foreground positions
    (plus one background position standing for the zero vectors of the masked-out support) enter
    the cosine: equal to the reference's dense computation, 2-5x cheaper on typical masks.
    """
    b, k, c, hs, ws = support.shape
    flat = support.flatten(3)  # [B,K,C,Ls]
    keep = min(int(fg.sum(-1).max().item()) + 1, hs * ws)
    order = fg.argsort(dim=-1, descending=True)[..., :keep]  # [B,K,M]: foreground first
    picked = flat.gather(3, order[:, :, None, :].expand(b, k, c, keep))  # [B,K,C,M]
    picked_mask = fg.gather(2, order)[:, :, None, :, None]  # [B,K,1,M,1]
    return prior_mask(query, picked.unsqueeze(-1), picked_mask.to(picked.dtype), normalize=False, eps=1e-7)


class AMFormerNetwork(FewShotModel):
    """The layers of AMFormer and its forward computation (``AMFormer`` adds the fsslab contract)."""

    def __init__(self, backbone: str, pretrained: str | None, n_base_classes: int, shot: int, hidden_dim: int,
                 transformer_dim: int, transformer_heads: tuple[int, ...], mining_heads: int,
                 sr_ratios: tuple[int, ...], mlp_ratio: int, parts: int, part_heads: int, kshot_hidden: int,
                 train_part_queries: bool, reproduce_official: bool, base_head_channels: int = 512) -> None:
        super().__init__()
        self.shot, self.reproduce_official = shot, reproduce_official
        self.base_learner = PSPNet(backbone, n_classes=n_base_classes + 1, norm="batch",
                                   head_channels=base_head_channels)
        if pretrained is not None:
            load_pspnet_weights(self.base_learner, pretrained)
        self.base_learner.requires_grad_(False)
        chans = self.base_learner.backbone.out_channels
        feat_dim = chans["layer2"] + chans["layer3"]
        self.reduce_query = nn.Sequential(nn.Conv2d(feat_dim, hidden_dim, 1, bias=False), nn.ReLU(inplace=True),
                                          nn.Dropout2d(0.5))
        self.reduce_support = nn.Sequential(nn.Conv2d(feat_dim, hidden_dim, 1, bias=False), nn.ReLU(inplace=True),
                                            nn.Dropout2d(0.5))
        self.query_fusion = nn.Sequential(nn.Conv2d(2 * hidden_dim + 2, transformer_dim, 1, bias=False),
                                          nn.ReLU(inplace=True))
        self.generator = ObjectMiningTransformer(transformer_dim, tuple(transformer_heads), mining_heads,
                                                 sr_ratios=tuple(sr_ratios), mlp_ratio=mlp_ratio)
        self.discriminator = PartDiscriminator(transformer_dim, 3, parts, part_heads,
                                               train_part_queries=train_part_queries)
        # [w_meta, w_estimate] and [w_meta_bg, w_base]: official init [1, 0] (pure meta learner)
        self.gram_fusion = nn.Conv2d(2, 1, 1, bias=False)
        self.learner_fusion = nn.Conv2d(2, 1, 1, bias=False)
        with torch.no_grad():
            self.gram_fusion.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
            self.learner_fusion.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
        self.shot_reweight = None
        if shot > 1:
            self.shot_reweight = nn.Sequential(nn.Conv2d(shot, kshot_hidden, 1), nn.ReLU(inplace=True),
                                               nn.Conv2d(kshot_hidden, shot, 1))

    # ------------------------------------------------------------------ features
    @torch.no_grad()
    def base_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Frozen backbone + PPM + embedding on [N,3,H,W]: layer2, layer3, layer4, embedding.

        Follows the model's memory format (``model.to(memory_format=torch.channels_last)``); the
        embedding skips convolving the upsampled pyramid maps (``fast_head``, same values).
        """
        psp = self.base_learner
        first_conv = next(m for m in psp.backbone.modules() if isinstance(m, nn.Conv2d))
        if first_conv.weight.is_contiguous(memory_format=torch.channels_last):
            images = images.contiguous(memory_format=torch.channels_last)
        feats = psp.backbone(images)
        feats["embedding"] = pyramid_embedding(psp.ppm, psp.head, feats["layer4"])
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
        """Meta logits [B,2,h,w] -> ensembled [B,2,h,w] (merged background, Gram-adjusted foreground)."""
        prob = logits.softmax(dim=1)
        est = estimate.view(-1, 1, 1, 1).expand_as(prob[:, :1])
        bg = self.gram_fusion(torch.cat([prob[:, :1], est], dim=1))
        fg = self.gram_fusion(torch.cat([prob[:, 1:], est], dim=1))
        return torch.cat([self.learner_fusion(torch.cat([bg, base_map], dim=1)), fg], dim=1)

    @staticmethod
    def refine_mask(final: torch.Tensor) -> torch.Tensor:
        """[B,2,h,w] -> [B,1,h,w] binary: fg > 0.5 where the foreground also wins."""
        bg, fg = final[:, :1], final[:, 1:]
        return ((fg > REFINE_THRESHOLD) & ~(bg > fg)).to(final.dtype)

    def _check_input_size(self, size: torch.Size, hw: torch.Size) -> None:
        """Inputs too small for G's pyramid: say the minimum input size instead of torch's kernel-size error."""
        need = self.generator.min_feature_size()
        if min(hw) >= need:
            return
        stride = max(1, round(size[0] / hw[0]))  # input pixels per feature cell (8 for the dilated ResNets)
        raise ConfigError(
            f"AMFormer needs inputs of at least {need * stride}x{need * stride} pixels (its 1/{stride} feature map "
            f"must be at least {need}x{need} for the transformer's pyramid), got {size[0]}x{size[1]}; raise "
            "data.size / data.val_size")

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict[str, torch.Tensor], trace: bool = False) -> FSSOutput:
        query_img, support_imgs = batch["query_img"], batch["support_imgs"]
        b, k = support_imgs.shape[:2]
        if k != self.shot and self.shot_reweight is not None:
            raise ConfigError(f"AMFormer was built for shot={self.shot} (shot_reweight), got {k} support images")
        size = query_img.shape[-2:]
        fg = (batch["support_masks"] == 1).to(query_img.dtype).flatten(0, 1).unsqueeze(1)  # [BK,1,H,W]
        images = torch.cat([query_img, support_imgs.flatten(0, 1) * fg], dim=0)
        feats = self.base_features(images)
        q = {n: f[:b] for n, f in feats.items()}
        s = {n: f[b:] for n, f in feats.items()}
        if q["layer2"].shape[-2:] != q["layer3"].shape[-2:]:  # VGG: layer2 at stride 8, layer3 at 16
            q["layer2"] = up(q["layer2"], q["layer3"].shape[-2:])
            s["layer2"] = up(s["layer2"], s["layer3"].shape[-2:])
        hw = q["layer3"].shape[-2:]
        self._check_input_size(size, hw)

        query_feat = self.reduce_query(torch.cat([q["layer3"], q["layer2"]], dim=1))  # [B,D,h,w]
        supp_feat = self.reduce_support(torch.cat([s["layer3"], s["layer2"]], dim=1))  # [BK,D,h,w]
        proto_shots = masked_average_pool(supp_feat, up(fg, hw), eps=5e-4)  # [BK,D,1,1]
        proto = proto_shots.view(b, k, -1).mean(dim=1)  # [B,D]
        init = torch.einsum("bc,bcl->bl", F.normalize(proto, dim=1), F.normalize(query_feat.flatten(2), dim=1))
        init = (init / INIT_TEMPERATURE).view(b, 1, *hw)
        init = init.masked_fill(init < INIT_THRESHOLD, 0.0)

        similarity = []
        for name in ("embedding", "layer4"):
            hq = q[name].shape[-2:]
            fg_small = F.interpolate(fg, size=hq, mode="nearest").view(b, k, -1)
            sim = foreground_similarity(q[name], s[name].view(b, k, *s[name].shape[1:]), fg_small)
            similarity.append(sim if hq == hw else up(sim, hw))
        similarity = torch.cat(similarity, dim=1).to(query_feat.dtype)  # [B,2,h,w]

        fused_in = torch.cat([query_feat, proto[:, :, None, None].expand(-1, -1, *hw),
                              similarity * SIMILARITY_SCALE], dim=1)
        pyramid = self.generator.encode(self.query_fusion(fused_in))

        base_logits = self.base_logits(q["embedding"])  # [B,n_base+1,h,w]
        base_prob = base_logits.softmax(dim=1)
        base_map = base_prob[:, 1:].sum(dim=1, keepdim=True)
        if self.training and "query_base_mask" in batch:
            base_map = base_map - self._target_base_prob(batch, base_prob)

        grams_q = gram_matrix(q["layer2"])  # [B,C,C]
        grams_s = gram_matrix(s["layer2"]).view(b, k, *grams_q.shape[1:])
        distance = (grams_q[:, None] - grams_s).norm(dim=(2, 3)) / grams_q.shape[-1]  # [B,K]: / ||ones(C,C)||
        weights = self.shot_weights(distance)
        estimate = (weights * distance).sum(dim=1)  # [B]

        stage_logits, finals, masks, fused_maps = [], [], [], []
        logits, attn_weights, fused = self.generator.mine(pyramid, init, similarity)
        for stage in range(1 + self.generator.refinements):
            if stage > 0:
                masks.append(self.refine_mask(finals[-1]))
                logits, _, fused = self.generator.refine(stage - 1, fused, masks[-1], similarity)
            stage_logits.append(logits)
            fused_maps.append(fused)
            finals.append(self.ensemble(logits, estimate, base_map))
        final = finals[-1]

        out = FSSOutput(up(final, size))
        out.aux.update(meta_logits=up(stage_logits[-1], size), base_logits=up(base_logits, size),
                       stage_logits=[up(x, size) for x in stage_logits], attention_weights=attn_weights)
        adversarial = None
        if "query_mask" in batch and (self.training or self.reproduce_official):
            adversarial = self._adversarial(batch, fused_maps, final, size)
            out.aux.update({n: v for n, v in adversarial.items() if not n.startswith(("part_maps", "d_score"))})
        if trace:
            out.trace = self._trace(init, similarity, stage_logits, masks, finals, base_logits, base_map,
                                    distance, weights, estimate, attn_weights, fused_maps, adversarial)
        return out

    def _target_base_prob(self, batch: dict[str, torch.Tensor], base_prob: torch.Tensor) -> torch.Tensor:
        """[B,1,h,w] probability of the episode's own class in the base learner (training, BAM 'Base').

        The reference indexes it with the class's base-list position; fsslab reads the channel from
        ``query_base_mask`` under the target pixels (the most frequent base label there; none -> 0).
        """
        target, base = batch["query_mask"], batch["query_base_mask"].long()
        n = base_prob.shape[1]
        under = torch.where((target == 1) & (base > 0) & (base < n), base, torch.zeros_like(base)).flatten(1)
        counts = torch.zeros(base.shape[0], n, device=base.device).scatter_add_(1, under, torch.ones_like(
            under, dtype=torch.float32))
        counts[:, 0] = 0
        channel = counts.argmax(dim=1)  # [B]; 0 when no target pixel carries a base label
        picked = base_prob.gather(1, channel.view(-1, 1, 1, 1).expand(-1, 1, *base_prob.shape[-2:]))
        return picked * (channel > 0).view(-1, 1, 1, 1).to(picked.dtype)

    def _diversity_draws(self, levels: int, parts: int, device: torch.device) -> list[tuple[torch.Tensor, ...]]:
        count = int(parts * 2 / 3)
        if self.reproduce_official:  # the reference's Python RNG (fake first, then real, per level)
            draws = [tuple(torch.tensor(random.sample(range(parts), count)) for _ in range(2)) for _ in range(levels)]
        else:
            draws = [tuple(torch.randperm(parts)[:count] for _ in range(2)) for _ in range(levels)]
        return [tuple(d.to(device) for d in pair) for pair in draws]

    def _adversarial(self, batch: dict[str, torch.Tensor], fused_maps: list[torch.Tensor], final: torch.Tensor,
                     size: tuple[int, int]) -> dict[str, torch.Tensor]:
        real = (batch["query_mask"] == 1).to(final.dtype).unsqueeze(1)
        real = F.interpolate(real, size=final.shape[-2:], mode="bilinear", align_corners=True)
        parts = self.discriminator.part_attention[0].part_queries.shape[0]
        draws = self._diversity_draws(len(fused_maps), parts, final.device)
        return adversarial_branch(self.discriminator, fused_maps, final[:, 1:], real, draws)

    def _trace(self, init, similarity, stage_logits, masks, finals, base_logits, base_map, distance, weights,
               estimate, attn_weights, fused_maps, adversarial) -> dict[str, torch.Tensor]:
        t = {"initial_prediction": init, "similarity": similarity,
             "meta_logits": torch.stack(stage_logits, 1), "refine_masks": torch.cat(masks, 1),
             "ensemble_logits": torch.stack(finals, 1), "mined_mask": stage_logits[-1].softmax(1)[:, 1:],
             "base_logits": base_logits, "base_map": base_map, "gram_distance": distance,
             "shot_weights": weights, "gram_estimate": estimate,
             "gram_fusion_weight": self.gram_fusion.weight.view(2),
             "learner_fusion_weight": self.learner_fusion.weight.view(2),
             "fused_features": torch.stack(fused_maps, 1)}
        for level, weight in enumerate(attn_weights):
            t[f"mining_attention_{level}"] = weight
        if adversarial is not None:
            t.update({n: adversarial[n] for n in ("part_maps_fake", "part_maps_real", "d_score_fake",
                                                  "d_score_real")})
        return {n: v.detach() for n, v in t.items()}

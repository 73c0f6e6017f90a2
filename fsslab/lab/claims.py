"""Notebook 06's analyses: knock-outs of a trained model (an ablation switch turned on at inference, no retraining),
the discriminator question (does D tell good from bad masks, or soft from hard?) and the sentences that report
them, each computed from the numbers.

A knock-out is not the paper's ablation: the paper retrains without the component (``fsslab ablate``); a knock-out
removes it from a model trained with it, which shows what the trained model relies on.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fsslab.batch import batch_of_one
from fsslab.viz import PERTURBATIONS, perturb_mask

SCALED = "ground truth x G's mean"  # the ground truth's shape at G's mean foreground value
HAZE_ONLY = "G: object 1, soft outside"  # G's soft values outside its binarised object, 1 on it
OBJECT_ONLY = "G: soft object, 0 outside"  # G's soft values on its binarised object, 0 outside
SOFT_MASKS = ("G soft", HAZE_ONLY, OBJECT_ONLY, "ground truth blurred", SCALED)


def knockout(model: nn.Module, spec: Mapping[str, Any], **switches: Any) -> nn.Module:
    """A copy of the trained ``model`` built from ``spec`` (``build_model``'s mapping: ``{"name": ..., **params}``,
    e.g. ``engine.model_spec(zoo.pretrained_config(name))``) plus ``switches`` (``no_ensemble=True``,
    ``mining_passes=1``, ``no_prior=True``, ``num_layers=3``, ...), holding the trained weights of every tensor the
    switched model still has (the removed ones are dropped; a shortened stack keeps its first layers). Eval mode."""
    from fsslab.models import build_model

    spec = {k: v for k, v in dict(spec).items() if k != "pretrained"}  # the weights come from ``model``
    torch.manual_seed(0)
    rebuilt = build_model({**spec, **switches})
    state, own = model.state_dict(), rebuilt.state_dict()
    missing = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if missing:
        raise ValueError(f"the switched model has tensors the trained one lacks: {missing[:4]}")
    rebuilt.load_state_dict({k: state[k] for k in own})
    return rebuilt.eval()


# ------------------------------------------------------------------------------------------------ the D question
def _soft_gt(gt_small: torch.Tensor) -> torch.Tensor:
    """The ground truth at feature size, blurred (two 3x3 means): its values cross from 1 to 0 over a few cells,
    as a soft prediction's do, but its shape is the ground truth's."""
    x = gt_small[None, None]
    for _ in range(2):
        x = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return x[0, 0]


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    union = (a | b).sum().item()
    return 1.0 if union == 0 else (a & b).sum().item() / union


def _rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None when either side is constant."""
    def ranks(v: Sequence[float]) -> list[float]:
        order = sorted(range(len(v)), key=lambda i: v[i])
        r = [0.0] * len(v)
        i = 0
        while i < len(v):
            j = i
            while j + 1 < len(v) and v[order[j + 1]] == v[order[i]]:
                j += 1
            for k in range(i, j + 1):
                r[order[k]] = (i + j) / 2
            i = j + 1
        return r

    rx, ry = ranks(x), ranks(y)
    if len(set(rx)) < 2 or len(set(ry)) < 2:
        return None
    return statistics.correlation(rx, ry)


@torch.no_grad()
def discriminator_study(model: nn.Module, episodes: Any, count: int | None = None,
                        strengths: Sequence[float] = (0.25, 0.5)) -> dict[str, Any]:
    """D's score (P(real), mean over levels and parts) of the masks of each episode, on G's own fused features:

    ground truth (bilinear at feature size, as D saw it in training), G's soft mask (the last ensemble's foreground
    channel, what D judged as fake in training), G's mask binarised (> 0.5), G's soft values kept only outside its
    binarised object (1 on it: ``HAZE_ONLY``) or only on it (0 outside: ``OBJECT_ONLY``), the ground truth blurred
    (soft values, the ground truth's shape) and scaled by G's mean foreground value, and binary corruptions of the ground truth
    (``viz.perturb_mask``). Returns ``{"scores": {mask: [per episode]}, "iou": {mask: [per episode]},
    "rank_correlation": [per episode: Spearman rho of D's score vs IoU with the ground truth over the binary
    masks], "episodes": n}``."""
    model.eval()
    n = len(episodes) if count is None else min(count, len(episodes))
    scores: dict[str, list[float]] = {}
    ious: dict[str, list[float]] = {}
    rhos: list[float] = []
    for i in range(n):
        sample = episodes[i]
        batch = batch_of_one(sample, drop=("query_mask",))
        trace = model(batch, trace=True).trace
        features = trace["fused_features"]  # [1,levels,C,h,w]
        size = features.shape[-2:]
        fake = trace["ensemble_logits"][0, -1, 1].float()  # [h,w], the map D judged as fake in training
        label = (sample["query_mask"] == 1).float()

        def small(mask: torch.Tensor, size: tuple[int, int] = tuple(size)) -> torch.Tensor:
            return F.interpolate(mask[None, None].float(), size=size, mode="bilinear", align_corners=True)[0, 0]

        gt = small(label)
        soft, binary = fake.clamp(0, 1), (fake > 0.5).float()
        masks = {"ground truth": gt, "G soft": soft, "G binarised": binary,
                 HAZE_ONLY: torch.maximum(soft, binary), OBJECT_ONLY: soft * binary,
                 "ground truth blurred": _soft_gt(gt),
                 SCALED: gt * float(fake[fake > 0.5].mean()) if (fake > 0.5).any() else gt * 0.5}
        for kind in PERTURBATIONS:
            for s in strengths:
                masks[f"{kind} {s:g}"] = small((perturb_mask(sample["query_mask"], kind, s, seed=i) == 1).float())
        stacked = torch.stack(list(masks.values()))[None]  # [1,M,h,w]
        judged = model.discriminator_scores(features, stacked)["score"][0].mean(-1)  # [M]
        for (name, mask), value in zip(masks.items(), judged.tolist()):
            scores.setdefault(name, []).append(value)
            ious.setdefault(name, []).append(_iou(mask, gt))
        hard = [m for m in masks if m not in SOFT_MASKS]
        rho = _rank_correlation([scores[m][-1] for m in hard], [ious[m][-1] for m in hard])
        if rho is not None:
            rhos.append(rho)
    return {"scores": scores, "iou": ious, "rank_correlation": rhos, "episodes": n}


def summarise_discriminator_study(study: Mapping[str, Any]) -> dict[str, Any]:
    """Mean scores and the comparisons notebook 06 reports (all from ``discriminator_study``'s numbers)."""
    s = study["scores"]
    mean = {k: statistics.fmean(v) for k, v in s.items()}

    def share(a: str, b: str) -> float:
        return statistics.fmean(float(x > y) for x, y in zip(s[a], s[b]))

    corruptions = [k for k in s if k.split(" ")[0] in PERTURBATIONS]
    return {
        "episodes": study["episodes"], "mean": mean,
        "gt_above_soft": share("ground truth", "G soft"), "gt_above_binarised": share("ground truth", "G binarised"),
        "binarised_above_soft": share("G binarised", "G soft"),
        "gt_above_blurred": share("ground truth", "ground truth blurred"),
        "gap_soft": mean["ground truth"] - mean["G soft"], "gap_binarised": mean["ground truth"] - mean["G binarised"],
        "gap_blurred": mean["ground truth"] - mean["ground truth blurred"],
        "gap_scaled": mean["ground truth"] - mean[SCALED],
        "gap_haze_only": mean["ground truth"] - mean[HAZE_ONLY], "gap_object_only": mean["ground truth"] - mean[OBJECT_ONLY],
        "corruptions_below_gt": sum(mean[k] < mean["ground truth"] for k in corruptions),
        "corruptions": len(corruptions),
        "gap_corruptions": mean["ground truth"] - statistics.fmean(mean[k] for k in corruptions),
        "rank_correlation": statistics.fmean(study["rank_correlation"]) if study["rank_correlation"] else None,
    }


def discriminator_findings(summary: Mapping[str, Any]) -> list[str]:
    """Sentences about D, each decided by the numbers of ``summarise_discriminator_study`` (thresholds stated)."""
    m, n = summary["mean"], summary["episodes"]
    lines = [
        (f"Over {n} episodes D scores the ground truth {m['ground truth']:.4f}, G's soft mask {m['G soft']:.4f}, "
        f"G's binarised mask {m['G binarised']:.4f}, the blurred ground truth {m['ground truth blurred']:.4f} and "
        f"the ground truth scaled to G's mean value {m[SCALED]:.4f}."),
        (f"The ground truth beats G's soft mask in {100 * summary['gt_above_soft']:.0f}% of the episodes and G's "
        f"binarised mask in {100 * summary['gt_above_binarised']:.0f}%."),
    ]
    gap = summary["gap_soft"]
    if gap > 0:
        explained = {"binarising G's mask": summary["gap_soft"] - summary["gap_binarised"],
                     "setting G's object to 1 (soft values outside kept)": summary["gap_soft"] - summary["gap_haze_only"],
                     "zeroing G's soft values outside its object": summary["gap_soft"] - summary["gap_object_only"]}
        lines.append("Share of the gap between the ground truth and G's soft mask that each change of G's mask removes: "
                     + "; ".join(f"{k} {100 * v / gap:.0f}%" for k, v in explained.items()) + ".")
        lines.append(f"Made soft with its own shape, the ground truth loses {100 * summary['gap_blurred'] / gap:.0f}% "
                     f"(blurred) and {100 * summary['gap_scaled'] / gap:.0f}% (scaled to G's values) of that gap.")
        lines.append(discriminator_conclusion(summary))
    else:
        lines.append(discriminator_conclusion(summary))
    rho = summary["rank_correlation"]
    if rho is None:
        lines.append("D's scores of the binary masks are constant within episodes: no ranking to compare.")
    else:
        quality = "ranks binary masks by their overlap with the ground truth" if rho >= 0.5 else (
            "ranks binary masks weakly by their overlap with the ground truth" if rho > 0.1 else
            "does not rank binary masks by their overlap with the ground truth")
        lines.append(f"Within an episode, D's score against IoU with the ground truth over the binary masks has a mean "
                     f"Spearman correlation of {rho:+.2f}: D {quality} (thresholds 0.5 and 0.1).")
    lines.append(f"{summary['corruptions_below_gt']} of {summary['corruptions']} corruptions score below the ground "
                 f"truth on average (mean gap {summary['gap_corruptions']:+.4f}).")
    return lines


def discriminator_conclusion(summary: Mapping[str, Any]) -> str:
    """The one-sentence answer to "what does D react to?", by the stated rules on the gap ground truth - G soft."""
    gap = summary["gap_soft"]
    if gap <= 0:
        return "D does not score the ground truth above G's soft mask on average."
    outside = (summary["gap_soft"] - summary["gap_object_only"]) / gap  # removed by zeroing the outside
    on_object = (summary["gap_soft"] - summary["gap_haze_only"]) / gap  # removed by filling the object
    if abs(summary["gap_binarised"]) < 0.25 * gap and outside >= 0.75 and on_object < 0.25:
        return ("D's preference comes from G's soft values outside the object (a haze of low foreground probability), "
                "not from its shape nor from soft values on the object: a binarised G mask scores like the ground "
                "truth (rule: binarising and zeroing the outside each remove at least 75% of the gap, filling the "
                "object less than 25%).")
    if abs(summary["gap_binarised"]) < 0.25 * gap:
        return "Binarising removes at least 75% of the gap: D tells soft from hard masks rather than good from bad shapes."
    if summary["gap_binarised"] > 0.5 * gap:
        return ("D still prefers the ground truth once G's mask is binarised (at least half of the gap remains): it "
                "judges shapes, not only softness.")
    return "The numbers do not separate softness from shape clearly (none of the notebook's rules applies)."


def shipped_spec(name: str) -> dict[str, Any]:
    """``build_model``'s mapping of the shipped model ``name`` (for ``knockout``)."""
    from fsslab.engine.build import model_spec
    from fsslab.zoo import pretrained_config

    return model_spec(pretrained_config(name))


def ablation_findings(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per ablation row (``fsslab.lab.ablation.summarise``), its verdict included as computed."""
    lines = []
    for r in rows:
        if r["verdict"] == "(reference)":
            continue
        if r["difference"] is None:
            lines.append(f"{r['variant']}: no runs.")
            continue
        where = f"[{r['interval'][0]:+.2f}, {r['interval'][1]:+.2f}]" if r["interval"] else "(no interval: 1 seed)"
        lines.append(f"{r['variant']}: full − variant = {r['difference']:+.2f} mIoU {where} over {r['n']} seed(s): "
                     f"{r['verdict']}; paper: {r['paper']}.")
    return lines


__all__ = ["ablation_findings", "discriminator_conclusion", "discriminator_findings", "discriminator_study", "knockout",
           "shipped_spec", "summarise_discriminator_study"]

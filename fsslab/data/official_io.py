"""The one mapping between fsslab's episode batch and the official code's `x, y, s_x, s_y, y_b, cat_idx`."""

from __future__ import annotations

import torch

from fsslab.data.classes import Benchmark

# Official names (PFENet/IPMT/BAM/AMFormer loaders):
#   x [B,3,H,W] query image, y [B,H,W] query mask (AMFormer's forward calls it `y_m`),
#   s_x [B,K,3,H,W], s_y [B,K,H,W], y_b [B,H,W] base annotation of the query,
#   cat_idx: a list holding one LongTensor [B] — the loaders return `subcls_list = [index]` and the
#   default collate turns it into `[tensor([...])]`. The index is 0-based into the fold's class list:
#   the base list (`sub_list`) while training, the novel list (`sub_val_list`) at evaluation; AMFormer
#   uses `cat_idx[0][b] + 1` as the base-learner channel of the training class.
# PFENet/IPMT's loaders put one entry per shot in `subcls_list`; every entry is the same class, so a
# single entry is what their models read. The official loaders stack the shots in reverse order
# (`torch.cat([s_k, s_x])`); shot order carries no meaning, fsslab keeps it.


def class_list(benchmark: Benchmark, fold: int, training: bool) -> list[int]:
    """The fold's class list that `cat_idx` indexes: base classes in training, novel ones otherwise."""
    return benchmark.base_classes(fold) if training else benchmark.novel_classes(fold)


def class_ids_to_cat_idx(class_id: torch.Tensor, benchmark: Benchmark, fold: int, training: bool) -> list[torch.Tensor]:
    """1-based benchmark class ids [B] → official `cat_idx` ([LongTensor [B]], 0-based in the fold list)."""
    classes = class_list(benchmark, fold, training)
    position = {c: i for i, c in enumerate(classes)}
    try:
        values = [position[int(c)] for c in class_id.reshape(-1).tolist()]
    except KeyError as err:
        kind = "base" if training else "novel"
        raise ValueError(f"class {err.args[0]} is not a {kind} class of {benchmark.name} fold {fold}") from err
    return [torch.tensor(values, dtype=torch.long, device=class_id.device)]


def cat_idx_to_class_ids(cat_idx, benchmark: Benchmark, fold: int, training: bool) -> torch.Tensor:
    """Inverse of `class_ids_to_cat_idx`: official `cat_idx` → 1-based class ids [B]."""
    first = cat_idx[0] if isinstance(cat_idx, (list, tuple)) else cat_idx
    classes = torch.tensor(class_list(benchmark, fold, training), dtype=torch.long, device=first.device)
    return classes[first.long()]


def to_official(batch: dict[str, torch.Tensor], benchmark: Benchmark, fold: int, training: bool) -> dict:
    """fsslab batch → {"x", "y", "s_x", "s_y", "y_b", "cat_idx"} (same tensors, no copies)."""
    official = {
        "x": batch["query_img"],
        "y": batch["query_mask"],
        "s_x": batch["support_imgs"],
        "s_y": batch["support_masks"],
        "cat_idx": class_ids_to_cat_idx(batch["class_id"], benchmark, fold, training),
    }
    if "query_base_mask" in batch:
        official["y_b"] = batch["query_base_mask"]
    return official


def official_forward_kwargs(batch: dict[str, torch.Tensor], arch: str, benchmark: Benchmark, fold: int,
                            training: bool) -> dict:  # fmt: skip
    """Keyword arguments of the official `forward`: IPMT `(x, s_x, s_y, y)`, AMFormer
    `(x, y_m, y_b, s_x, s_y, cat_idx)`."""
    official = to_official(batch, benchmark, fold, training)
    if arch == "ipmt":
        return {k: official[k] for k in ("x", "s_x", "s_y", "y")}
    if arch == "amformer":
        return {"x": official["x"], "y_m": official["y"], "y_b": official["y_b"], "s_x": official["s_x"],
                "s_y": official["s_y"], "cat_idx": official["cat_idx"]}  # fmt: skip
    raise ValueError(f"arch must be 'ipmt' or 'amformer', got {arch!r}")


def from_official(official: dict, benchmark: Benchmark, fold: int, training: bool) -> dict[str, torch.Tensor]:
    """Official tensors → fsslab batch keys (padding masks are unknown there and left out)."""
    batch = {
        "query_img": official["x"],
        "query_mask": official.get("y", official.get("y_m")),
        "support_imgs": official["s_x"],
        "support_masks": official["s_y"],
        "class_id": cat_idx_to_class_ids(official["cat_idx"], benchmark, fold, training),
    }
    if official.get("y_b") is not None:
        batch["query_base_mask"] = official["y_b"]
    return batch

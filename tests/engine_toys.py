"""Tiny models and episodic datasets for the engine tests (independent of fsslab's real models and data)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from fsslab.config import DataConfig, EvalConfig, RunConfig, TrainConfig
from fsslab.models.base import FewShotModel, OptimizerSpec
from fsslab.models.output import FSSOutput

SIZE = 8  # toy episodes are 8×8


class ToyNet(FewShotModel):
    """Conv features + support prototype → 2-class head; dropout makes the run depend on the RNG."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.encoder = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Conv2d(8, 2, 1)
        self.dropout = nn.Dropout2d(dropout)

    def forward(self, batch, trace=False):
        query = F.relu(self.encoder(batch["query_img"]))  # [B,4,H,W]
        b, k = batch["support_imgs"].shape[:2]
        support = F.relu(self.encoder(batch["support_imgs"].flatten(0, 1)))  # [B*K,4,H,W]
        mask = (batch["support_masks"].flatten(0, 1) == 1).unsqueeze(1).float()  # [B*K,1,H,W]
        proto = (support * mask).sum((2, 3)) / (mask.sum((2, 3)) + 1e-5)  # [B*K,4]
        proto = proto.view(b, k, -1).mean(1)[:, :, None, None].expand_as(query)  # [B,4,H,W]
        return FSSOutput(logits=self.head(self.dropout(torch.cat([query, proto], 1))))

    def loss(self, output, batch):
        ce = F.cross_entropy(output.logits, batch["query_mask"], ignore_index=255)
        return {"total": ce, "ce": ce}


class ToyGD(FewShotModel):
    """A generator (segmenter) and a discriminator on (image, mask) pairs, stepped on alternate iterations."""

    def __init__(self):
        super().__init__()
        self.generator = ToyNet(dropout=0.0)
        self.discriminator = nn.Sequential(
            nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)
        )

    def forward(self, batch, trace=False):
        out = self.generator(batch)
        if self.training:
            fake = out.logits.softmax(1)[:, 1:]  # [B,1,H,W]
            real = (batch["query_mask"] == 1).float().unsqueeze(1)
            out.aux["d_fake"] = self.discriminator(torch.cat([batch["query_img"], fake], 1))
            out.aux["d_fake_detached"] = self.discriminator(torch.cat([batch["query_img"], fake.detach()], 1))
            out.aux["d_real"] = self.discriminator(torch.cat([batch["query_img"], real], 1))
        return out

    def loss(self, output, batch):
        ce = F.cross_entropy(output.logits, batch["query_mask"], ignore_index=255)
        ones, zeros = torch.ones_like(output.aux["d_real"]), torch.zeros_like(output.aux["d_real"])
        g_adv = F.binary_cross_entropy_with_logits(output.aux["d_fake"], ones)
        d = F.binary_cross_entropy_with_logits(
            output.aux["d_real"], ones
        ) + F.binary_cross_entropy_with_logits(output.aux["d_fake_detached"], zeros)
        return {"total": ce + 0.1 * g_adv, "ce": ce, "g_adv": g_adv, "d": d}

    def optimizer_specs(self, base_lr, weight_decay):
        return [
            OptimizerSpec(
                "generator",
                "adamw",
                [{"params": list(self.generator.parameters()), "lr": base_lr}],
                objective="generator",
                options={"weight_decay": weight_decay},
            ),
            OptimizerSpec(
                "discriminator",
                "adam",
                [{"params": list(self.discriminator.parameters()), "lr": base_lr}],
                objective="discriminator",
            ),
        ]

    def step_objectives(self, losses, iteration):
        if iteration % 2 == 0:
            return {"generator": losses["total"]}
        return {"discriminator": losses["d"]}


class ToyEpisodes(Dataset):
    """Episodes of a blob on noise: the class decides the blob's colour; training items add random noise
    drawn from the global torch RNG (as real augmentations do). ``evaluation=True`` adds the
    original-resolution label keys (a 6×5 label on a canvas of 8) and 255 pixels."""

    def __init__(self, n: int = 12, shot: int = 1, evaluation: bool = False, seed: int = 0, classes: int = 3):
        self.n, self.shot, self.evaluation, self.seed, self.classes = n, shot, evaluation, seed, classes

    def __len__(self):
        return self.n

    @property
    def episodes(self):
        """Evaluation episodes (their classes, as the mismatched-support control reads them)."""
        if not self.evaluation:
            return None
        return [SimpleNamespace(class_id=i % self.classes + 1) for i in range(self.n)]

    def _image(self, g, class_id):
        mask = torch.zeros(SIZE, SIZE, dtype=torch.long)
        top, left = torch.randint(0, 4, (2,), generator=g).tolist()
        mask[top : top + 4, left : left + 4] = 1
        image = torch.randn(3, SIZE, SIZE, generator=g) * 0.5
        image[class_id % 3] += 2.0 * mask
        return image, mask

    def __getitem__(self, index):
        g = torch.Generator().manual_seed(self.seed * 1000 + index)
        class_id = index % self.classes + 1
        query, query_mask = self._image(g, class_id)
        supports = [self._image(g, class_id) for _ in range(self.shot)]
        if not self.evaluation:
            query = query + 0.1 * torch.randn(query.shape)  # "augmentation": global RNG
        sample = {
            "query_img": query,
            "query_mask": query_mask,
            "support_imgs": torch.stack([s[0] for s in supports]),
            "support_masks": torch.stack([s[1] for s in supports]),
            "class_id": torch.tensor(class_id),
            "episode_index": torch.tensor(index),
        }
        if self.evaluation:
            label = query_mask[:6, :5].clone()
            label[0, 0] = 255
            canvas = torch.full((SIZE, SIZE), 255, dtype=torch.long)
            canvas[:6, :5] = label
            sample["query_mask_ori"], sample["query_ori_size"] = canvas, torch.tensor([6, 5])
            sample["query_valid_size"] = torch.tensor([6, 5])  # the label is the input's top-left 6x5
        return sample


def toy_config(out_dir: str | Path, **train) -> RunConfig:
    options = {
        "iterations": 6,
        "base_lr": 0.05,
        "weight_decay": 1e-4,
        "log_every": 1,
        "ckpt_every": 3,
        "tensorboard": False,
        "progress": False,
        "out_dir": str(out_dir),
        "seed": 7,
        "device": "cpu",
    }
    options.update(train)
    batch = options.pop("batch_size", 2)
    return RunConfig(
        name="toy",
        data=DataConfig(dataset="synthetic", batch_size=batch, workers=0),
        train=TrainConfig(**options),
        eval=EvalConfig(episodes=6, seeds=[1, 2]),
    )

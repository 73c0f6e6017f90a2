"""Shared fixtures: tiny VOC-layout (20 classes, meta.json) and COCO-layout datasets written on the fly."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from fixtures.toys import toy_build_dataset
from fixtures.voc import write_coco_dataset, write_voc_dataset


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory) -> Path:
    return write_voc_dataset(tmp_path_factory.mktemp("voc"))


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory) -> Path:
    return write_coco_dataset(tmp_path_factory.mktemp("coco"))


@pytest.fixture(scope="session")
def synthetic_root_factory(tmp_path_factory):
    """``make(knobs) -> root``: the synthetic benchmark for these generator knobs, generated once per session.

    FSSLAB_TEST_SYNTHETIC_ROOT may point at an existing benchmark to reuse; it is used when its meta.json was
    generated with the same knobs (write_synthetic_if_missing checks that), else a fresh one is generated.
    """
    from fsslab.data.synthetic import SyntheticConfig, write_synthetic_if_missing

    cache: dict[str, Path] = {}

    def make(knobs: dict) -> Path:
        key = json.dumps(knobs, sort_keys=True)
        if key not in cache:
            config = SyntheticConfig.from_dict(dict(knobs))
            reuse = os.environ.get("FSSLAB_TEST_SYNTHETIC_ROOT")
            root = None
            if reuse and (Path(reuse) / "meta.json").is_file():
                try:
                    write_synthetic_if_missing(reuse, config)
                    root = Path(reuse)
                except Exception:  # noqa: BLE001 - another config on disk: generate our own below
                    root = None
            if root is None:
                root = tmp_path_factory.mktemp("synthetic")
                write_synthetic_if_missing(root, config, workers=2)
            cache[key] = root
        return cache[key]

    return make


@pytest.fixture(scope="module")
def one_thread():
    """Small tensors: one thread avoids oversubscribing the shared CI / dev CPUs (and is fastest for tiny models).
    Use it per module: ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def toy_world(monkeypatch):
    """Runs of config files whose model is ``toy`` (fixtures.toys.ToyNet) on ToyEpisodes, through the real CLI."""
    import fsslab.engine.build
    from fsslab import models

    monkeypatch.setitem(models.MODEL_REGISTRY, "toy", "fixtures.toys:ToyNet")
    monkeypatch.setattr(fsslab.engine.build, "build_dataset", toy_build_dataset)

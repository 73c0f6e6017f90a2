"""The contract every registered model keeps with the engine (DESIGN.md, contract 2), checked once for all:
logits at the input size for 1 and 5 shots and two sizes, a finite ``loss()["total"]``, optimiser groups that
cover every trainable parameter once, and trace keys equal to the model's documented ``TRACE_KEYS``."""

from __future__ import annotations

import sys

import pytest
import torch
from fixtures.batches import episode_batch

from fsslab.config import load_config
from fsslab.models import MODEL_REGISTRY, build_model, model_class

# registry name -> the shipped synthetic config whose (tiny) model is checked; None: no parameters
CONFIGS = {"ipmt": "ipmt_tiny", "amformer": "amformer_tiny", "baseline": "baseline_tiny",
           "pspnet": "pspnet_base_tiny", "oracle": None, "all_foreground": None}
TRAINABLE = [name for name in CONFIGS if CONFIGS[name] is not None]  # the controls have nothing to train
SIZES = [(64, 64), (72, 56)]


def test_every_registered_model_is_checked():
    assert set(CONFIGS) == set(MODEL_REGISTRY)


def build(name: str) -> torch.nn.Module:
    params = {}
    if CONFIGS[name] is not None:
        params = dict(load_config(f"synthetic/{CONFIGS[name]}").model.params)
        params.pop("pretrained", None)  # nothing read from disk
    torch.manual_seed(0)
    return build_model({"name": name, **params})


@pytest.fixture(scope="module")
def models() -> dict[str, torch.nn.Module]:
    torch.set_num_threads(1)
    return {name: build(name) for name in CONFIGS}


def classes(name: str, model: torch.nn.Module) -> int:
    return model.n_classes if name == "pspnet" else 2  # PSPNet is the base learner: one score per base class


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("shots", [1, 5])
@pytest.mark.parametrize("size", SIZES)
def test_logits_at_the_input_size(models, name, shots, size):
    model = models[name].eval()
    with torch.no_grad():
        out = model(episode_batch(2, shots, *size))
    assert out.logits.shape == (2, classes(name, model), *size)
    assert torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", TRAINABLE)
def test_loss_total_is_a_finite_scalar_with_gradients(models, name):
    model = models[name].train()
    batch = episode_batch(2, 1, *SIZES[0])
    losses = model.loss(model(batch), batch)
    assert losses["total"].shape == () and torch.isfinite(losses["total"])
    assert losses["total"].requires_grad
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", TRAINABLE)
def test_optimiser_groups_cover_every_trainable_parameter_once(models, name):
    model = models[name]
    grouped = [p for spec in model.optimizer_specs(0.01, 1e-4) for group in spec.param_groups for p in group["params"]]
    assert len(grouped) == len({id(p) for p in grouped}), "a parameter is in two groups"
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in grouped} == trainable


@pytest.mark.parametrize("name", list(CONFIGS))
def test_trace_keys_are_the_documented_ones(models, name):
    model = models[name].eval()
    documented = sys.modules[model_class(name).__module__].TRACE_KEYS
    with torch.no_grad():
        trace = model(episode_batch(1, 2, *SIZES[0]), trace=True).trace
    # the adversarial branch (D's part maps and scores) runs only in training
    assert set(trace) == {k for k, doc in documented.items() if not doc.startswith("training only")}
    assert all(not v.requires_grad for v in trace.values() if isinstance(v, torch.Tensor))

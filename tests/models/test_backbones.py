"""Backbones: shapes and strides per dilation mode, frozen BN, norm folding, weight loading from both layouts."""

from __future__ import annotations

import math

import pytest
import torch

from fsslab.models.backbones import (
    FrozenBatchNorm2d,
    block_geometry,
    build_backbone,
    load_backbone_weights,
    set_norm_folding,
)

torch.set_num_threads(1)


def _down(size: int, times: int) -> int:
    for _ in range(times):  # every stride-2 layer here (3x3 p1, 1x1, max-pool 3/2/1) gives ceil(n/2)
        size = math.ceil(size / 2)
    return size


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {mode: build_backbone("resnet_tiny", dilation=mode).eval() for mode in ("torchvision", "pspnet", "none")}


@pytest.mark.parametrize("size", [(65, 65), (50, 77), (33, 40)])
@pytest.mark.parametrize("mode", ["torchvision", "pspnet", "none"])
def test_resnet_tiny_stage_shapes(tiny_models, mode: str, size: tuple[int, int]) -> None:
    model = tiny_models[mode]
    with torch.no_grad():
        feats = model(torch.randn(2, 3, *size))
    assert list(feats) == model.stages == ["layer0", "layer1", "layer2", "layer3", "layer4"]
    strides = {"layer0": 2, "layer1": 2, "layer2": 3, "layer3": 3, "layer4": 3}
    if mode == "none":
        strides.update(layer3=4, layer4=5)
    for name, feat in feats.items():
        expected = (2, model.out_channels[name], _down(size[0], strides[name]), _down(size[1], strides[name]))
        assert tuple(feat.shape) == expected, (name, mode)


def test_block_geometry_matches_the_references() -> None:
    depths = (3, 4, 6, 3)
    tv, psp = block_geometry("torchvision", depths), block_geometry("pspnet", depths)
    # IPMT (replace_stride_with_dilation=[F,T,T]): first block keeps the previous dilation
    assert tv[2] == [(1, 1)] + [(1, 2)] * 5 and tv[3] == [(1, 2), (1, 4), (1, 4)]
    # BAM/AMFormer: every conv2 of layer3 dilated 2, of layer4 dilated 4
    assert psp[2] == [(1, 2)] * 6 and psp[3] == [(1, 4)] * 3
    assert block_geometry("none", depths)[3] == [(2, 1), (1, 1), (1, 1)]
    with pytest.raises(ValueError, match="dilation"):
        block_geometry("atrous", depths)


def test_dilation_lives_in_the_3x3_conv_of_the_bottleneck() -> None:
    model = build_backbone("resnet50", dilation="torchvision")
    first, second = model.layer4[0], model.layer4[1]
    assert first.conv2.dilation == (2, 2) and first.conv2.padding == (2, 2) and first.conv2.stride == (1, 1)
    assert second.conv2.dilation == (4, 4) and first.downsample[0].stride == (1, 1)
    assert model.layer2[0].conv2.stride == (2, 2) and model.layer2[0].conv1.stride == (1, 1)


@pytest.mark.parametrize("name", ["resnet50", "resnet50_tv", "resnet101", "vgg16"])
def test_big_backbones_shapes_on_tiny_inputs(name: str) -> None:
    model = build_backbone(name).eval()
    with torch.no_grad():
        feats = model(torch.randn(1, 3, 41, 50))
    channels = {"layer0": 128 if name in ("resnet50", "resnet101") else 64, "layer1": 256, "layer2": 512,
                "layer3": 1024, "layer4": 2048}
    strides = {"layer0": 2, "layer1": 2, "layer2": 3, "layer3": 3, "layer4": 3}
    if name == "vgg16":  # the references' slicing: a max-pool ends layer0..3, layer3/4 at stride 16
        channels = {"layer0": 64, "layer1": 128, "layer2": 256, "layer3": 512, "layer4": 512}
        strides = {"layer0": 1, "layer1": 2, "layer2": 3, "layer3": 4, "layer4": 4}
    for stage, feat in feats.items():
        assert feat.shape[1] == channels[stage] == model.out_channels[stage]
        assert tuple(feat.shape[-2:]) == (_down(41, strides[stage]), _down(50, strides[stage])), (name, stage)


def test_forward_stage_chains_to_forward(tiny_models) -> None:
    model = tiny_models["pspnet"]
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        full, y = model(x), x
        for stage in model.stages:
            y = model.forward_stage(stage, y)
            assert torch.equal(y, full[stage])
    with pytest.raises(ValueError, match="stage"):
        model.forward_stage("layer5", x)


def _randomise_norms(model: torch.nn.Module) -> None:
    gen = torch.Generator().manual_seed(3)
    for name, buf in model.named_buffers():
        if name.endswith("running_var"):
            buf.copy_(torch.rand(buf.shape, generator=gen) + 0.5)
        elif name.endswith("running_mean"):
            buf.copy_(torch.randn(buf.shape, generator=gen) * 0.1)
    for m in model.modules():
        if isinstance(m, (FrozenBatchNorm2d, torch.nn.BatchNorm2d)):
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(0, 0.1, generator=gen)


def test_frozen_bn_has_no_parameters_and_ignores_train_mode() -> None:
    torch.manual_seed(0)
    model = build_backbone("resnet_tiny", norm="frozen")
    _randomise_norms(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    norm_params = [p for m in model.modules() if isinstance(m, FrozenBatchNorm2d) for p in m.parameters()]
    assert norm_params == []
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 48, 48)
    out_train = model.train()(x)["layer4"]
    out_train.sum().backward()
    out_eval = model.eval()(x)["layer4"]
    assert torch.equal(out_train, out_eval)
    for k, v in model.state_dict().items():  # statistics untouched by a training-mode forward
        assert torch.equal(v, before[k]), k
    assert model.conv1.weight.grad is not None  # convs still trainable: freezing them is the model's choice


def test_batch_norm_option_uses_batch_statistics_in_training() -> None:
    model = build_backbone("resnet_tiny", norm="batch")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        assert not torch.allclose(model.train()(x)["layer4"], model.eval()(x)["layer4"])


@pytest.mark.parametrize("norm", ["frozen", "batch"])
def test_norm_folding_matches_unfolded_arithmetic_and_gradients(norm: str) -> None:
    torch.manual_seed(0)
    model = build_backbone("resnet_tiny", norm=norm).eval()
    _randomise_norms(model)
    x = torch.randn(2, 3, 40, 44)
    outputs, grads = [], []
    for fold in (True, False):
        set_norm_folding(model, fold)
        model.zero_grad()
        out = model(x)["layer4"]
        out.square().mean().backward()
        outputs.append(out.detach())
        grads.append(model.layer2[0].conv1.weight.grad.clone())
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm", ["frozen", "batch"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_frozen_stage_runner_is_bit_equal_to_forward_stage(norm: str, layout: torch.memory_format) -> None:
    """The folded, cached, ReLU/residual-fused path of a frozen backbone computes what forward_stage computes
    (same folding, same order of the sums): bit for bit in the channels_last layout the models run in, up to
    float rounding otherwise (oneDNN may pick another algorithm for a fused NCHW convolution), for FrozenBN and
    eval BatchNorm (AMFormer's base learner); a backbone that trains, or a norm in training mode, keeps the
    plain stages."""
    from fsslab.models.backbones.folded import can_fold, frozen_stage_runner

    torch.manual_seed(0)
    backbone = build_backbone("resnet_tiny", dilation="pspnet", norm=norm).eval()
    for m in backbone.modules():  # non-trivial statistics, so that a wrong fold would show
        if hasattr(m, "running_var"):
            m.running_var.uniform_(0.5, 2.0)
            m.running_mean.normal_()
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
    assert not can_fold(backbone)  # its convolutions still require grad: a backbone that trains
    backbone.requires_grad_(False)
    assert can_fold(backbone)
    run = frozen_stage_runner(backbone)
    x = y = torch.randn(2, 3, 45, 37).contiguous(memory_format=layout)
    with torch.no_grad():
        for stage in backbone.stages:
            x, y = backbone.forward_stage(stage, x), run(stage, y)
            if layout == torch.channels_last:
                assert torch.equal(x, y), stage
            else:
                assert (x - y).abs().max() <= 1e-6 * x.abs().max(), stage
            assert y.is_contiguous(memory_format=layout), stage
    if norm == "batch":
        backbone.train()
        assert not can_fold(backbone)  # batch statistics: nothing fixed to fold


def test_frozen_bn_formula() -> None:
    bn = FrozenBatchNorm2d(3)
    bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5]))
    bn.bias.copy_(torch.tensor([0.0, 1.0, -1.0]))
    bn.running_mean.copy_(torch.tensor([0.5, 0.0, 2.0]))
    bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25]))
    x = torch.randn(2, 3, 4, 5)
    expected = (x - bn.running_mean.view(1, 3, 1, 1)) / torch.sqrt(bn.running_var.view(1, 3, 1, 1) + 1e-5)
    expected = expected * bn.weight.view(1, 3, 1, 1) + bn.bias.view(1, 3, 1, 1)
    torch.testing.assert_close(bn(x), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert bn(x.bfloat16()).dtype == torch.bfloat16  # not promoted to float32 by the fp32 buffers


def test_channels_last_and_bf16_autocast_keep_layout_and_dtype(tiny_models) -> None:
    model = tiny_models["pspnet"].to(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 48, 48).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        feats = model(x)
    model.to(memory_format=torch.contiguous_format)
    assert feats["layer4"].dtype == torch.bfloat16
    assert feats["layer4"].is_contiguous(memory_format=torch.channels_last)


def _v2_reference_keys() -> dict[str, tuple[int, ...]]:
    """The resnet50_v2.pth layout written out independently of fsslab's modules (+ fc)."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv_bn(prefix: str, bn: str, cout: int, cin: int, k: int) -> None:
        keys[f"{prefix}.weight"] = (cout, cin, k, k)
        for buf in ("weight", "bias", "running_mean", "running_var"):
            keys[f"{bn}.{buf}"] = (cout,)

    conv_bn("conv1", "bn1", 64, 3, 3)
    conv_bn("conv2", "bn2", 64, 64, 3)
    conv_bn("conv3", "bn3", 128, 64, 3)
    cin = 128
    for layer, (width, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"layer{layer}.{b}"
            conv_bn(f"{p}.conv1", f"{p}.bn1", width, cin, 1)
            conv_bn(f"{p}.conv2", f"{p}.bn2", width, width, 3)
            conv_bn(f"{p}.conv3", f"{p}.bn3", width * 4, width, 1)
            if b == 0:
                conv_bn(f"{p}.downsample.0", f"{p}.downsample.1", width * 4, cin, 1)
            cin = width * 4
    keys["fc.weight"], keys["fc.bias"] = (1000, 2048), (1000,)
    return keys


def _random_state(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in shapes.items():
        value = torch.rand(shape, generator=gen) * 0.1
        state[k] = value + 1.0 if k.endswith("running_var") else value
    return state


def test_loads_v2_layout_file_with_wrapper_prefix_and_fc(tmp_path) -> None:
    shapes = _v2_reference_keys()
    assert len(shapes) == 275 + 2  # the IPMT backbone's 275 tensors + the ImageNet classifier
    state = _random_state(shapes, seed=1)
    path = tmp_path / "resnet50_v2.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, path)
    model = build_backbone("resnet50", dilation="torchvision")
    report = load_backbone_weights(model, path)
    assert report.loaded == 275 and set(report.ignored) == {"fc.weight", "fc.bias"}
    assert "classifier" in str(report)
    assert torch.equal(model.layer3[5].conv2.weight, state["layer3.5.conv2.weight"])
    assert torch.equal(model.bn3.running_var, state["bn3.running_var"])


def test_loads_torchvision_layout_and_reports_step_counters(tmp_path) -> None:
    shapes = {k: v for k, v in _v2_reference_keys().items() if not k.startswith(("conv2", "conv3", "bn2", "bn3"))}
    shapes["conv1.weight"] = (64, 3, 7, 7)
    for k in list(shapes):
        if k.startswith("bn1"):
            shapes[k] = (64,)
    for k in ("layer1.0.conv1.weight", "layer1.0.downsample.0.weight"):  # layer1 sees 64 channels
        shapes[k] = (shapes[k][0], 64, 1, 1)
    state = _random_state(shapes, seed=2)
    state["bn1.num_batches_tracked"] = torch.tensor(7)
    path = tmp_path / "resnet50-torchvision.pth"
    torch.save(state, path)
    model = build_backbone("resnet50_tv")
    report = load_backbone_weights(model, path)
    assert "bn1.num_batches_tracked" in report.ignored
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    with pytest.raises(ValueError, match=r"resnet50-torchvision\.pth.*7x7 torchvision stem.*_tv"):
        load_backbone_weights(build_backbone("resnet50"), path)


def test_vgg_loads_torchvision_features_into_the_reference_slices() -> None:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]
    shapes, index, cin = {}, 0, 3
    for item in cfg:  # torchvision vgg16_bn ``features`` numbering
        if item == "M":
            index += 1
            continue
        shapes[f"features.{index}.weight"], shapes[f"features.{index}.bias"] = (item, cin, 3, 3), (item,)
        for buf in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"features.{index + 1}.{buf}"] = (item,)
        index, cin = index + 3, item
    shapes["classifier.0.weight"] = (4, 4)
    state = _random_state(shapes, seed=3)
    model = build_backbone("vgg16")
    report = load_backbone_weights(model, state)
    assert list(report.ignored) == ["classifier.0.weight"]
    # get_vgg16_layer: layer0 = features[0:7], layer3 = [24:34], layer4 = [34:43]
    assert torch.equal(model.layer0[0].weight, state["features.0.weight"])
    assert torch.equal(model.layer1[0].weight, state["features.7.weight"])
    assert torch.equal(model.layer3[0].weight, state["features.24.weight"])
    assert torch.equal(model.layer4[7].running_var, state["features.41.running_var"])


def test_pspnet_layer0_stem_layout_is_accepted_by_a_batchnorm_backbone() -> None:
    source = build_backbone("resnet_tiny")  # frozen BN: the file has no step counters
    _randomise_norms(source)
    state = source.state_dict()
    renamed = {k: v for k, v in state.items() if not k.startswith(("conv", "bn"))}
    for index, name in {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}.items():
        for k, v in state.items():
            if k.startswith(name + "."):
                renamed[f"layer0.{index}.{k.split('.', 1)[1]}"] = v
    target = build_backbone("resnet_tiny", norm="batch")
    load_backbone_weights(target, renamed)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(target.eval()(x)["layer4"], source.eval()(x)["layer4"])


def test_clear_errors_for_bad_files(tmp_path) -> None:
    model = build_backbone("resnet_tiny")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_backbone_weights(model, tmp_path / "missing.pth")
    bad = tmp_path / "pickled_object.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "args": _Opaque()}, bad)
    with pytest.raises(ValueError, match="pickled_object.pth"):
        load_backbone_weights(model, bad)
    partial = {k: v for k, v in model.state_dict().items() if not k.startswith("layer4")}
    partial["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['layer4.*unexpected \['extra.weight'\]"):
        load_backbone_weights(model, partial)
    wrong = dict(model.state_dict())
    wrong["conv1.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_backbone_weights(model, wrong)
    with pytest.raises(ValueError, match="no torchvision ImageNet file"):
        build_backbone("resnet50", pretrained="torchvision")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("resnet18")
    with pytest.raises(ValueError, match="unknown norm"):
        build_backbone("resnet_tiny", norm="group")


class _Opaque:
    """Not loadable with ``weights_only=True``."""

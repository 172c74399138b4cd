"""The spotting model: parameter arithmetic (method-spec 7), TSM/GSM/ASTRM semantics, temporal heads, clip length
handling, weights loading, and a forward/backward pass of the paper's model. Tiny inputs throughout."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pespot.config import AstrmConfig, load_config
from pespot.errors import PespotError
from pespot.model import backbone as backbone_mod
from pespot.model import build_model
from pespot.model import weights as weights_mod
from pespot.model.astrm import ASTRM, dynamic_temporal_conv, dynamic_temporal_conv_shifted
from pespot.model.shift import GatedShift, ShiftThenConv, TemporalShift
from pespot.model.temporal import TEMPORAL_HEADS, TemporalDeformableAttention, build_temporal_head

WIDTHS = [24, 56] + [152] * 4 + [368] * 7  # conv1 output widths of the 13 regnety_002 bottlenecks
GSM_FOLDS = [8, 8, 16] + [40] * 4 + [92] * 6  # ceil((C_in // 4) / 4) * 4 for C_in = 32, 24, 56, 152 x4, 368 x6


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread per test


def config(preset: str = "paper", *overrides: str):
    return load_config(preset, ["model.pretrained=false", *overrides])


def meta_model(cfg, num_classes: int = 17):
    with torch.device("meta"):
        return build_model(cfg, num_classes, load_weights=False)


def count(params) -> int:
    return sum(p.numel() for p in params)


# ------------------------------------------------------------------------------------------------ parameter counts


def test_e2e_spot_parameters_match_the_hand_count():
    parts = {k: count(v) for k, v in meta_model(config("e2e-spot")).parts().items()}
    assert parts == {
        "backbone": 2_793_996,  # regnety_002 without the ImageNet head
        "temporal_module": sum(29 * fold + 2 for fold in GSM_FOLDS),  # 21,602
        "temporal_head": 2 * 3 * (368 * 368 + 368 * 368 + 2 * 368),  # Bi-GRU, 1,629,504
        "classifier": 736 * 18 + 18,
        "projection": 0,  # contrastive: none
    }
    assert sum(parts.values()) == 4_458_368  # the paper's 4.46M for E2E-Spot


def test_paper_parameters_match_the_hand_count():
    t = 128
    model = meta_model(config("paper", f"model.clip_len={t}"))
    parts = {k: count(v) for k, v in model.parts().items()}
    fs = 2 * 7 * 7
    ft = [3 * c * (c // 4) + 2 * (c // 4) + (c // 4) * c for c in WIDTHS]  # conv3x1x1, BN, conv1x1x1
    gt = t * 2 * t + 2 * (2 * t) + 2 * t * 3  # FC, BN, FC
    assert parts["temporal_module"] == sum(fs + f + gt for f in ft) == 1_489_626
    assert parts["projection"] == 736 * 736 + 736 + 736 * 128 + 128
    assert sum(parts.values()) == 6_563_160  # method-spec 7.2, within 1.6 % of the paper's 6.46M
    # parts() splits the parameters without overlap or omission
    ids = [id(p) for plist in model.parts().values() for p in plist]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))


def test_astrm_parts_switch_off_their_parameters():
    c, t = 24, 8
    full = count(ASTRM(c, t).parameters())
    no_fs = count(ASTRM(c, t, AstrmConfig(use_fs=False)).parameters())
    no_ft = count(ASTRM(c, t, AstrmConfig(use_ft=False)).parameters())
    no_gt = count(ASTRM(c, t, AstrmConfig(use_gt=False)).parameters())
    assert full - no_fs == 98
    assert full - no_ft == c * c + c // 2
    assert full - no_gt == 2 * t * t + 4 * t + 6 * t
    assert count(ASTRM(c, t, AstrmConfig(fs_bn=True)).parameters()) == full + 2


# ------------------------------------------------------------------------------------------------ TSM / GSM


def test_tsm_shifts_one_eighth_each_way_with_zero_padding():
    b, t, c = 2, 5, 16
    x = torch.randn(b * t, c, 3, 3)
    out = TemporalShift(c, t)(x).view(b, t, c, 3, 3)
    x5 = x.view(b, t, c, 3, 3)
    fold = c // 8
    assert torch.equal(out[:, :-1, :fold], x5[:, 1:, :fold]) and not out[:, -1, :fold].any()
    assert torch.equal(out[:, 1:, fold:2 * fold], x5[:, :-1, fold:2 * fold]) and not out[:, 0, fold:2 * fold].any()
    assert torch.equal(out[:, :, 2 * fold:], x5[:, :, 2 * fold:])


def test_gsm_gate_shifts_halves_in_opposite_directions():
    b, t, c = 2, 4, 32
    gsm = GatedShift(c, t, interleave=False)
    assert gsm.fold == 8 and count(gsm.parameters()) == 29 * 8 + 2
    with torch.no_grad():
        gsm.gate.bias.fill_(30.0)  # tanh(30) == 1.0 in float32: the whole half is shifted
    x = torch.randn(b * t, c, 3, 3)
    out = gsm(x).view(b, t, c, 3, 3)
    x5 = x.view(b, t, c, 3, 3)
    assert torch.equal(out[:, :-1, :4], x5[:, 1:, :4]) and not out[:, -1, :4].any()  # toward the past
    assert torch.equal(out[:, 1:, 4:8], x5[:, :-1, 4:8]) and not out[:, 0, 4:8].any()  # toward the future
    assert torch.equal(out[:, :, 8:], x5[:, :, 8:])


def test_gsm_starts_as_identity_and_wrapped_block_equals_unwrapped():
    import timm

    net = timm.create_model("regnety_002", num_classes=0).eval()
    block = net.s1.b1  # conv1 input 32 channels -> GSM fold 8
    t = 4
    x = torch.randn(2 * t, 32, 8, 8)
    expected = block(x)
    conv1 = block.conv1

    # exact identity without E2E-Spot's channel re-interleave
    block.conv1 = ShiftThenConv(conv1, GatedShift(32, t, interleave=False).eval())
    assert torch.allclose(block(x), expected, atol=1e-6)

    # E2E-Spot's GSM: identity up to its fixed re-interleave of each half (a*fold/4 + b -> 2b + a)
    gsm = GatedShift(32, t).eval()
    perm = [0, 2, 1, 3, 4, 6, 5, 7] + list(range(8, 32))
    assert torch.equal(gsm(x), x[:, perm])
    assert torch.allclose(ShiftThenConv(conv1, gsm)(x), conv1(x[:, perm]), atol=1e-6)


def test_insertion_points_follow_e2e_spot_and_the_paper():
    gsm = meta_model(config("e2e-spot"))
    blocks = backbone_mod.bottlenecks(gsm.backbone)
    assert len(blocks) == 13 and all(isinstance(b.conv1, ShiftThenConv) for b in blocks)
    assert [m.fold for m in gsm.temporal_modules] == GSM_FOLDS
    astrm = meta_model(config("paper"))
    blocks = backbone_mod.bottlenecks(astrm.backbone)
    assert all(isinstance(b.conv1, nn.Sequential) and b.conv1[1] is m for b, m in zip(blocks, astrm.temporal_modules))
    assert [m.channels for m in astrm.temporal_modules] == WIDTHS


# ------------------------------------------------------------------------------------------------ ASTRM


def loop_temporal_conv(y: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """out[:, t] = sum_k theta[..., k] * y[:, t + k - K//2], zero outside the clip, one frame at a time."""
    b, t, c = y.shape[:3]
    k_size = theta.shape[-1]
    out = torch.zeros_like(y)
    for ti in range(t):
        for k in range(k_size):
            src = ti + k - k_size // 2
            if 0 <= src < t:
                out[:, ti] += theta[:, :, k].view(b, c, 1, 1) * y[:, src]
    return out


@pytest.mark.parametrize("k_size", [3, 5])
def test_dynamic_conv_equals_the_explicit_tap_formula(k_size):
    torch.manual_seed(0)
    y = torch.randn(2, 6, 5, 3, 4, dtype=torch.float64)
    theta = torch.rand(2, 5, k_size, dtype=torch.float64)
    expected = loop_temporal_conv(y, theta)
    assert torch.allclose(dynamic_temporal_conv(y, theta), expected, atol=1e-12)
    assert torch.allclose(dynamic_temporal_conv_shifted(y, theta), expected, atol=1e-12)


def reference_astrm(m: ASTRM, x: torch.Tensor) -> torch.Tensor:
    """ASTRM written directly from eqs. 1-4 on the folded (B, C, T, H, W) tensor with Conv3d/BN3d calls."""
    n, c, h, w = x.shape
    t = m.clip_len
    x5 = x.view(n // t, t, c, h, w).permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)
    fs = torch.sigmoid(m.fs.conv(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))  # per frame
    hid = F.relu(F.conv3d(x5, m.ft.reduce.weight, padding=(1, 0, 0)))
    hid = F.batch_norm(hid, None, None, m.ft.bn.weight, m.ft.bn.bias, training=True, eps=m.ft.bn.eps)
    ft = torch.sigmoid(F.conv3d(hid, m.ft.expand.weight)).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)
    pooled = x5.mean(dim=(3, 4)).reshape(-1, t)  # (B*C, T)
    g = m.gt.fc2(F.relu(m.gt.bn(m.gt.fc1(pooled))))
    theta = torch.sigmoid(g).view(n // t, c, -1)
    y = x * (1 + fs) * (1 + ft)
    return loop_temporal_conv(y.view(n // t, t, c, h, w), theta).reshape(n, c, h, w)


def test_astrm_follows_the_equations():
    torch.manual_seed(0)
    m = ASTRM(8, 6).double().train()
    x = torch.randn(2 * 6, 8, 5, 5, dtype=torch.float64)
    assert torch.allclose(m(x), reference_astrm(m, x), atol=1e-10)


def test_astrm_channels_last_in_channels_last_out():
    torch.manual_seed(0)
    m = ASTRM(8, 4).train()
    x = torch.randn(2 * 4, 8, 6, 6)
    out = m(x)
    out_cl = m(x.contiguous(memory_format=torch.channels_last))
    assert out_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, out_cl, atol=1e-5)


@pytest.mark.parametrize("off", [{"use_fs": False}, {"use_ft": False}, {"use_gt": False},
                                 {"use_fs": False, "use_ft": False, "use_gt": False}])
def test_astrm_parts_can_be_switched_off(off):
    torch.manual_seed(0)
    m = ASTRM(8, 4, AstrmConfig(**off))
    x = torch.randn(2 * 4, 8, 5, 5, requires_grad=True)
    out = m(x)
    assert out.shape == x.shape
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    if len(off) == 3:
        assert torch.equal(out, x)  # nothing left: the identity


def test_astrm_gradients_reach_fs_ft_and_gt():
    torch.manual_seed(0)
    m = ASTRM(8, 6)
    x = torch.randn(2 * 6, 8, 5, 5)
    m(x).square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert {name.split(".")[0] for name, _ in m.named_parameters()} == {"fs", "ft", "gt"}


@pytest.mark.parametrize("activation,tolerance", [("softmax", 0.002), ("sigmoid", 0.06)])
def test_gt_centre_init_starts_near_identity(activation, tolerance):
    torch.manual_seed(0)
    cfg = AstrmConfig(use_fs=False, use_ft=False, gt_center_init=True, gt_activation=activation)
    m = ASTRM(4, 5, cfg).eval()
    x = torch.randn(5, 4, 3, 3)
    assert (m(x) - x).abs().max() < tolerance * x.abs().max()
    assert not torch.allclose(ASTRM(4, 5, AstrmConfig(use_fs=False, use_ft=False)).eval()(x), x, atol=0.1)


def test_gt_tam_init_gives_every_clip_the_same_equal_taps():
    torch.manual_seed(0)
    tam = ASTRM(4, 5, AstrmConfig(use_fs=False, use_ft=False, gt_init="tam")).train()
    default = ASTRM(4, 5, AstrmConfig(use_fs=False, use_ft=False)).train()
    x = torch.randn(3 * 5, 4, 3, 3)  # 3 clips of 5 frames
    theta = tam.gt(x)  # (3, 4, K): sigmoid(≈0) everywhere
    assert (theta - 0.5).abs().max() < 0.01
    assert (default.gt(x) - 0.5).abs().max() > 0.05  # PyTorch's init: the taps depend on the clip
    assert tam.gt.fc1.weight.std() < 0.002 and tam.gt.fc2.weight.std() < 0.002


# ------------------------------------------------------------------------------------------------ temporal heads


@pytest.mark.parametrize("name", TEMPORAL_HEADS)
def test_temporal_heads_shapes(name):
    head = build_temporal_head(name, 368)
    x = torch.randn(2, 7, 368)
    out = head(x)
    assert out.shape == (2, 7, head.out_dim)
    expected_dim = {"bigru": 736, "bigru2": 736, "bilstm": 736, "mstcn": 256}.get(name, 368)
    assert head.out_dim == expected_dim


def test_deformable_attention_interpolates_with_zero_padding():
    d = 16
    attn = TemporalDeformableAttention(d, heads=2, points=2)
    with torch.no_grad():
        attn.offsets.bias.fill_(0.5)  # every point samples halfway to the next frame
        for lin in (attn.value, attn.out):
            lin.weight.copy_(torch.eye(d))
            lin.bias.zero_()
    x = torch.randn(2, 5, d)
    nxt = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
    out = attn(x)
    assert torch.allclose(out, 0.5 * (x + nxt), atol=1e-6)
    # with its default init (points spread around each frame) every projection learns; the sampling positions
    # through the interpolation weights
    attn = TemporalDeformableAttention(d, heads=2, points=2)
    attn(x).square().sum().backward()
    for name, p in attn.named_parameters():
        assert p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------------ the spotter


@pytest.mark.parametrize("module", ["none", "tsm", "gsm", "astrm"])
def test_temporal_modules_shapes_and_short_clips(module):
    torch.manual_seed(0)
    model = build_model(config("paper", "model.clip_len=6", f"model.temporal_module={module}"), 3).eval()
    head_inputs = []
    model.temporal_head.register_forward_hook(lambda mod, args, out: head_inputs.append(args[0]))
    x = torch.randn(2, 6, 3, 32, 32)
    with torch.no_grad():
        logits, proj = model(x, return_projection=True)
        assert logits.shape == (2, 6, 4) and proj.shape == (12, 128)
        assert torch.allclose(proj.norm(dim=1), torch.ones(12), atol=1e-5)
        # a shorter clip is zero-padded to clip_len for the backbone; the padding is gone before the temporal head
        short = model(x[:, :4])
        assert short.shape == (2, 4, 4) and head_inputs[-1].shape == (2, 4, 368)
        model(torch.cat([x[:, :4], torch.zeros_like(x[:, :2])], dim=1))
        assert torch.allclose(head_inputs[-2], head_inputs[-1][:, :4], atol=1e-5)
        if module == "none":
            assert model(torch.randn(1, 9, 3, 32, 32)).shape == (1, 9, 4)  # any length
        else:
            with pytest.raises(PespotError, match="7 frames.*6"):
                model(torch.randn(1, 7, 3, 32, 32))


def test_softic_projection_on_backbone_feature_and_without_contrastive():
    cfg = config("paper", "model.softic_feature=backbone")
    assert count(meta_model(cfg).parts()["projection"]) == 368 * 368 + 368 + 368 * 128 + 128
    model = meta_model(config("paper", "loss.contrastive=none"))
    assert model.projection is None
    assert meta_model(config("paper", "loss.contrastive=none"), 3).parts()["projection"] == []
    with torch.device("meta"):
        assert build_model(config("e2e-spot"), 3, with_projection=True, load_weights=False).projection is not None


def test_paper_model_forward_backward_on_cpu():
    torch.manual_seed(0)
    model = build_model(config("paper", "model.clip_len=16"), 17).train()
    x = torch.randn(2, 16, 3, 64, 64)
    logits, proj = model(x, return_projection=True)
    assert logits.shape == (2, 16, 18) and proj.shape == (32, 128)
    assert torch.isfinite(logits).all()
    (F.binary_cross_entropy_with_logits(logits, torch.rand_like(logits)) + proj[:, 0].mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


# ------------------------------------------------------------------------------------------------ weights


@pytest.fixture(scope="module")
def timm_state():
    import timm

    torch.manual_seed(123)
    return timm.create_model("regnety_002").state_dict()  # with the ImageNet head, as timm saves it


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_is_loaded(tmp_path, timm_state, suffix):
    path = tmp_path / f"regnety_002{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in timm_state.items()}, str(path))
    else:
        torch.save(timm_state, path)
    x = torch.randn(1, 4, 3, 32, 32)
    outputs = []
    for weights in (None, str(path)):
        torch.manual_seed(0)
        cfg = config("paper", "model.clip_len=4", "model.temporal_module=none", f"model.weights={weights or 'null'}")
        model = build_model(cfg, 3).eval()
        with torch.no_grad():
            outputs.append(model(x))
    assert torch.equal(model.backbone.stem.conv.weight, timm_state["stem.conv.weight"])
    assert torch.equal(model.backbone.s4.b7.conv3.bn.running_var, timm_state["s4.b7.conv3.bn.running_var"])
    assert not torch.allclose(outputs[0], outputs[1])


def test_weights_file_errors_name_the_file(tmp_path, timm_state):
    missing = tmp_path / "nowhere.safetensors"
    with pytest.raises(PespotError, match="nowhere.safetensors.*not found"):
        backbone_mod.create_backbone("regnety_002", weights=str(missing))
    wrong = tmp_path / "wrong.pth"
    state = dict(timm_state)
    state["s1.b1.conv1.conv.weight"] = torch.zeros(3, 3, 1, 1)
    del state["s4.b7.conv3.conv.weight"]
    torch.save(state, wrong)
    with pytest.raises(PespotError, match=r"wrong\.pth: not a timm regnety_002 state dict.*s1\.b1\.conv1") as err:
        backbone_mod.create_backbone("regnety_002", weights=str(wrong))
    assert "s4.b7.conv3.conv.weight" in str(err.value) and "\n" not in str(err.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a tensor file")
    with pytest.raises(PespotError, match="garbage.safetensors: cannot read weights"):
        backbone_mod.create_backbone("regnety_002", weights=str(garbage))


def test_pretrained_offline_warns_once_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights_mod, "_cached_pretrained_file", lambda name: None)

    def no_network(*args, **kwargs):
        raise AssertionError("tried the network although HF_HUB_OFFLINE is set")

    monkeypatch.setattr(weights_mod, "_hub_reachable", no_network)
    monkeypatch.setattr(weights_mod.socket, "create_connection", no_network)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = backbone_mod.create_backbone("regnety_002", pretrained=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1 and "random initialisation" in messages[0] and "HF_HUB_OFFLINE" in messages[0]
    assert net.num_features == 368

"""Vision encoders: grid shapes, resolution changes, freezing, local loading, preprocessing.

Every model is a tiny random-init config (width 32, 2 layers, 32 px images, 8 px patches);
checkpoints are written to tmp_path and read back through the real loaders, never a hub.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from vlab.config import from_dict, to_dict
from vlab.errors import ConfigError, VlabError
from vlab.models.vlm.parts import KINDS, VisionConfig
from vlab.models.vlm.vision import build_vision_encoder

HF = ("clip", "siglip", "dinov2")


def pixels(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_encoders_return_a_patch_grid(kind):
    encoder = build_vision_encoder(VisionConfig(kind=kind))
    out = encoder(pixels())
    assert encoder.grid == (4, 4) and encoder.width == 32
    assert out.shape == (2, 4, 4, 32)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    ("kind", "image_size", "grid", "width"),
    [
        ("eva02", None, (24, 24), 1024),  # EVA-02-L/14 at 336 px: 576 patches
        ("eva02", 448, (32, 32), 1024),
        ("clip", None, (24, 24), 1024),
        ("siglip", None, (27, 27), 1152),  # so400m/14 at 384 px: 729 patches
        ("dinov2", 384, (27, 27), 1024),  # MambaVLM runs DINOv2 at SigLIP's 384 px
        ("patch", None, (24, 24), 1024),
    ],
)
def test_paper_presets_have_the_papers_grids(kind, image_size, grid, width):
    cfg = VisionConfig(kind=kind, preset="paper", image_size=image_size)
    encoder = build_vision_encoder(cfg, device="meta")
    assert encoder.grid == grid and encoder.width == width


def test_mambavlm_pair_gives_1458_visual_tokens():
    dino = build_vision_encoder(
        VisionConfig(kind="dinov2", preset="paper", image_size=384), device="meta"
    )
    siglip = build_vision_encoder(VisionConfig(kind="siglip", preset="paper"), device="meta")
    assert dino.grid == siglip.grid
    assert dino.num_patches + siglip.num_patches == 1458


@pytest.mark.parametrize("kind", HF)
def test_hf_resolution_change_interpolates_positions(kind):
    native = build_vision_encoder(VisionConfig(kind=kind))
    big = build_vision_encoder(VisionConfig(kind=kind, image_size=48))
    assert big.native_image_size == native.native_image_size == 32
    for a, b in zip(native.parameters(), big.parameters(), strict=True):
        assert torch.equal(a, b)  # same seed, same weights: only the resolution differs
    assert big.grid == (6, 6)
    assert big(pixels(size=48)).shape == (2, 6, 6, 32)
    # At the native size the encoder is the plain (non-interpolated) model.
    x = pixels()
    raw = native.model(pixel_values=x).last_hidden_state[:, -16:].reshape(2, 4, 4, 32)
    torch.testing.assert_close(native(x), raw, rtol=0, atol=0)


def _save_eva(tmp_path, name="eva.pt", prefix=""):
    encoder = build_vision_encoder(VisionConfig(kind="eva02"), seed=3)
    state = {prefix + k: v for k, v in encoder.model.state_dict().items()}
    path = tmp_path / name
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)
    return encoder, path


def test_eva02_checkpoint_round_trip_and_resampled_positions(tmp_path):
    original, path = _save_eva(tmp_path)
    loaded = build_vision_encoder(VisionConfig(kind="eva02", pretrained=str(path)), seed=99)
    x = pixels()
    torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)

    big = build_vision_encoder(
        VisionConfig(kind="eva02", pretrained=str(path), image_size=48), seed=99
    )
    assert big.grid == (6, 6) and big.native_image_size == 32
    assert big(pixels(size=48)).shape == (2, 6, 6, 32)
    old = original.model.pos_embed  # (1, 1 + 16, D): class token, then the 4 x 4 grid
    new = big.model.pos_embed
    torch.testing.assert_close(new[:, :1], old[:, :1])
    grid = old[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    # timm resamples with antialiased bicubic (PIL's kernel), HF towers without antialias.
    expected = F.interpolate(grid, size=(6, 6), mode="bicubic", antialias=True)
    torch.testing.assert_close(new[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 36, -1))


@pytest.mark.parametrize(
    ("name", "prefix"), [("model.safetensors", ""), ("open_clip.pt", "visual.trunk.")]
)
def test_eva02_loads_folders_and_openclip_prefixes(tmp_path, name, prefix):
    original, path = _save_eva(tmp_path, name, prefix)
    target = tmp_path if name == "model.safetensors" else path
    loaded = build_vision_encoder(VisionConfig(kind="eva02", pretrained=str(target)))
    x = pixels(1)
    torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)


def test_eva02_checkpoint_of_other_shapes_fails_clearly(tmp_path):
    _, path = _save_eva(tmp_path)
    cfg = VisionConfig(kind="eva02", pretrained=str(path), overrides={"depth": 3})
    with pytest.raises(VlabError, match="does not fit"):
        build_vision_encoder(cfg)


@pytest.mark.parametrize("kind", HF)
def test_hf_save_pretrained_round_trip(tmp_path, kind):
    import transformers as tf

    original = build_vision_encoder(VisionConfig(kind=kind), seed=5)
    original.model.save_pretrained(tmp_path)
    tf.CLIPImageProcessor(image_mean=[0.1, 0.2, 0.3], image_std=[0.4, 0.5, 0.6]).save_pretrained(
        tmp_path
    )
    loaded = build_vision_encoder(VisionConfig(kind=kind, pretrained=str(tmp_path)), seed=6)
    x = pixels()
    torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)
    assert loaded.frozen and not loaded.training
    # The processor saved next to the weights defines the transform.
    assert loaded.pixel_mean == pytest.approx((0.1, 0.2, 0.3))
    assert loaded.pixel_std == pytest.approx((0.4, 0.5, 0.6))


def test_hf_checkpoint_of_the_wrong_kind_is_refused(tmp_path):
    build_vision_encoder(VisionConfig(kind="siglip")).model.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="pretrained"):
        build_vision_encoder(VisionConfig(kind="clip", pretrained=str(tmp_path)))


@pytest.mark.parametrize("kind", ["eva02", "clip", "dinov2"])
def test_frozen_encoder_is_untouched_by_training(kind):
    encoder = build_vision_encoder(VisionConfig(kind=kind))
    head = nn.Linear(encoder.width, 3)
    model = nn.ModuleDict({"encoder": encoder, "head": head})
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    head_before = head.weight.clone()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.train()
    assert not any(m.training for m in encoder.modules())
    for step in range(2):
        loss = head(encoder(pixels(seed=step))).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None and not p.requires_grad for p in encoder.parameters())
    for k, v in encoder.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(head.weight, head_before)


def test_patch_encoder_trains_by_default_and_can_be_frozen():
    encoder = build_vision_encoder(VisionConfig(kind="patch"))
    assert VisionConfig(kind="patch").frozen is False and VisionConfig(kind="clip").frozen
    encoder(pixels()).sum().backward()
    assert encoder.proj.weight.grad is not None and encoder.training
    frozen = build_vision_encoder(VisionConfig(kind="patch", frozen=True))
    assert not any(p.requires_grad for p in frozen.parameters())


def test_patch_encoder_is_a_linear_map_of_raw_patches():
    encoder = build_vision_encoder(VisionConfig(kind="patch"))
    x = pixels(1)
    out = encoder(x)
    patch = x[0, :, 8:16, 16:24].reshape(-1)  # row 1, column 2
    torch.testing.assert_close(out[0, 1, 2], encoder.proj(patch))


@pytest.mark.parametrize("kind", ["eva02", "siglip", "dinov2"])
def test_final_norm_is_the_encoders_own_norm(kind):
    normed = build_vision_encoder(VisionConfig(kind=kind))
    raw = build_vision_encoder(VisionConfig(kind=kind, final_norm=False))
    norm = normed.model.norm if kind == "eva02" else None
    if kind == "siglip":
        norm = normed.model.post_layernorm
    if kind == "dinov2":
        norm = normed.model.layernorm
    x = pixels()
    torch.testing.assert_close(normed(x), norm(raw(x)))
    first = build_vision_encoder(VisionConfig(kind=kind, feature_layer=0))
    assert not torch.allclose(first(x), normed(x))


def test_preprocess_resizes_and_normalises_with_the_encoders_values():
    clip = build_vision_encoder(VisionConfig(kind="clip"))
    images = [Image.new("RGB", (50, 40), (255, 128, 0)), Image.new("L", (20, 30), 64)]
    batch = clip.preprocess(images)
    assert batch.shape == (2, 3, 32, 32) and batch.dtype == torch.float32
    mean = torch.tensor(clip.pixel_mean).view(3, 1, 1)
    std = torch.tensor(clip.pixel_std).view(3, 1, 1)
    expected = (torch.tensor([255.0, 128.0, 0.0]).view(3, 1, 1) / 255 - mean) / std
    torch.testing.assert_close(batch[0], expected.expand(3, 32, 32))
    torch.testing.assert_close(batch[1], ((64 / 255 - mean) / std).expand(3, 32, 32))
    assert clip.pixel_mean == pytest.approx((0.48145466, 0.4578275, 0.40821073))
    patch = build_vision_encoder(VisionConfig(kind="patch", image_size=48))
    out = patch.preprocess([Image.new("RGB", (10, 10), (255, 255, 255))])
    assert out.shape == (1, 3, 48, 48) and torch.allclose(out, torch.ones_like(out))
    assert patch(out).shape == (1, 6, 6, 32)


def test_wrong_pixel_shape_names_the_expected_size():
    encoder = build_vision_encoder(VisionConfig(kind="siglip"))
    with pytest.raises(VlabError, match="32, 32"):
        encoder(pixels(size=48))


def test_config_validation_and_json_round_trip(tmp_path):
    with pytest.raises(ConfigError, match="'kind'"):
        VisionConfig(kind="resnet")
    with pytest.raises(ConfigError, match="'preset'"):
        VisionConfig(kind="clip", preset="huge")
    with pytest.raises(ConfigError, match="'pretrained'"):
        VisionConfig(kind="clip", pretrained=str(tmp_path))
    with pytest.raises(ConfigError, match="'pretrained'"):
        VisionConfig(kind="eva02", pretrained=str(tmp_path / "missing.pt"))
    with pytest.raises(ConfigError, match="'pretrained'"):
        VisionConfig(kind="patch", pretrained=str(tmp_path))
    with pytest.raises(ConfigError, match="'image_size'"):
        VisionConfig(kind="clip", image_size=0)
    with pytest.raises(ConfigError, match="'feature_layer'"):
        build_vision_encoder(VisionConfig(kind="clip", feature_layer=2))
    cfg = VisionConfig(kind="dinov2", image_size=48, feature_layer=-2)
    data = to_dict(cfg)
    assert data["frozen"] is True  # the kind default is written out
    assert from_dict(VisionConfig, data) == cfg
    assert dataclasses.replace(cfg, frozen=False).frozen is False

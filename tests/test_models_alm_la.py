"""Shape and contract tests for the ALM and LA-Transformer models (small sizes, CPU, no network)."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from reid_utils.errors import ConfigError, ReidError
from reid_utils.models import alm, backbones, build_model, la_transformer
from reid_utils.models.heads import CosineClassifier

SIZES = [(256, 128), (128, 64)]


def _tiny_la(num_ids: int = 5, attribute_form: str = "groups", image_size=(256, 128), **kwargs):
    options = dict(embed_dim=48, depth=2, num_heads=2, image_size=image_size)
    options.update(kwargs)
    return la_transformer.build(num_ids, attribute_form, **options)


# ---------------------------------------------------------------------------------------------
# ALM


@pytest.fixture(scope="module")
def alm_model():
    torch.manual_seed(0)
    return alm.build(7, "binary", depth=18, pyramid_dim=64)


@pytest.mark.parametrize("height,width", SIZES)
def test_alm_train_and_eval_shapes(alm_model, height, width):
    x = torch.randn(2, 3, height, width)
    alm_model.train()
    out = alm_model(x)
    assert out["features"].shape == (2, 512)
    assert out["id_logits"].shape == (2, 7)
    assert len(out["attribute_logits"]) == 4  # 3 pyramid levels + global branch
    assert all(logits.shape == (2, 30) for logits in out["attribute_logits"])
    assert out["boxes"].shape == (2, 3, 30, 4)
    alm_model.eval()
    with torch.no_grad():
        out = alm_model(x)
    assert out["embedding"].shape == (2, alm_model.embedding_dim) == (2, 512)
    assert out["attribute_logits"].shape == (2, 30)
    assert out["boxes"].shape == (2, 3, 30, 4)
    assert alm_model.attribute_form == "binary" and alm_model.num_ids == 7


def test_alm_pyramid_channels_fine_level_has_most():
    model = alm.build(0, depth=18, pyramid_dim=32)
    assert model.pyramid.out_channels == (96, 64, 32)  # layer2: 3d, layer3: 2d, layer4: d
    maps = model.pyramid(model.trunk.feature_maps(torch.randn(1, 3, 128, 64)))
    assert [tuple(m.shape[1:]) for m in maps] == [(96, 16, 8), (64, 8, 4), (32, 4, 2)]


def test_alm_boxes_stay_in_range():
    torch.manual_seed(1)
    model = alm.build(0, depth=18).eval()
    with torch.no_grad():
        for localizer in model.localizers:  # move the boxes far from their centred initial value
            localizer.box_b.normal_(0, 3)
            localizer.box_w.normal_(0, 0.01)
        boxes = model(torch.randn(3, 3, 128, 64))["boxes"]
    scales, shifts = boxes[..., :2], boxes[..., 2:]
    assert ((scales > 0) & (scales < 1)).all()
    assert ((shifts > -1) & (shifts < 1)).all()
    assert scales.std() > 0.1 and shifts.std() > 0.1  # the perturbation did reach the boxes


def test_alm_eval_logits_are_max_over_branches(alm_model):
    x = torch.randn(2, 3, 128, 64)
    alm_model.eval()
    with torch.no_grad():
        evaluated = alm_model(x)
        # train-mode forward with BatchNorm frozen gives the same branches as eval mode
        alm_model.train()
        for module in alm_model.modules():
            if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                module.eval()
        branches = alm_model(x)["attribute_logits"]
    alm_model.train()
    stacked = torch.stack(branches)  # (4, B, 30)
    torch.testing.assert_close(evaluated["branch_attribute_logits"], stacked)
    torch.testing.assert_close(evaluated["attribute_logits"], stacked.amax(dim=0))
    # max voting picks different branches for different logits (not one branch wholesale)
    assert len(stacked.argmax(dim=0).unique()) > 1


def test_alm_separable_localization_equals_grid_sample():
    """The fast path (separable weights) equals affine_grid + grid_sample + pooling, values and gradients."""
    torch.manual_seed(2)
    fast = alm.AttributeLocalization(16, 5, reduction=4, localization="separable")
    with torch.no_grad():
        fast.box_b.normal_(0, 1)
        fast.box_w.normal_(0, 0.05)
    slow = alm.AttributeLocalization(16, 5, reduction=4, localization="grid_sample")
    slow.load_state_dict(fast.state_dict())
    for height, width in [(16, 8), (7, 5)]:
        x = torch.randn(3, 16, height, width)
        fast_logits, fast_boxes = fast(x)
        slow_logits, slow_boxes = slow(x)
        torch.testing.assert_close(fast_logits, slow_logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast_boxes, slow_boxes)
        fast_grads = torch.autograd.grad(fast_logits.sum(), [fast.box_w, fast.box_b, fast.se_w1])
        slow_grads = torch.autograd.grad(slow_logits.sum(), [slow.box_w, slow.box_b, slow.se_w1])
        for a, b in zip(fast_grads, slow_grads):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


def test_alm_boxes_are_trained(alm_model):
    model = alm_model.train()
    model.zero_grad()
    out = model(torch.randn(2, 3, 128, 64))
    loss = sum(logits.sum() for logits in out["attribute_logits"]) + out["id_logits"].logsumexp(1).sum()
    loss.backward()
    for localizer in model.localizers:
        assert localizer.box_w.grad.abs().sum() > 0 and localizer.box_b.grad.abs().sum() > 0


def test_boxes_to_pixels():
    full = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert [float(v) for v in alm.boxes_to_pixels(full, 256, 128)] == [0.0, 0.0, 128.0, 256.0]
    top_right = torch.tensor([0.5, 0.25, 0.5, -0.75])  # right half, top quarter
    assert [float(v) for v in alm.boxes_to_pixels(top_right, 256, 128)] == [64.0, 0.0, 128.0, 64.0]
    outside = torch.tensor([0.9, 0.9, 0.9, 0.0])
    assert float(alm.boxes_to_pixels(outside, 256, 128)[2]) == 128.0
    assert float(alm.boxes_to_pixels(outside, 256, 128, clip=False)[2]) == pytest.approx(2.8 / 2 * 128)
    batch = torch.rand(2, 3, 30, 4)
    assert all(t.shape == (2, 3, 30) for t in alm.boxes_to_pixels(batch, 256, 128))


def test_alm_without_ids_and_via_registry():
    model = build_model("alm", 0, depth=18, classifier="cosine")
    assert model.attribute_form == "binary"  # the registry's default for alm
    out = model.train()(torch.randn(2, 3, 128, 64))
    assert out["id_logits"] is None
    groups = build_model("alm", 3, attribute_form="groups", depth=18).eval()
    with torch.no_grad():
        out = groups(torch.randn(1, 3, 128, 64))
    assert out["attribute_logits"].shape == (1, 41) and out["boxes"].shape == (1, 3, 41, 4)


# ---------------------------------------------------------------------------------------------
# LA-Transformer


@pytest.mark.parametrize("height,width,patch", [(256, 128, 16), (128, 64, 8)])
def test_la_transformer_shapes(height, width, patch):
    torch.manual_seed(0)
    model = la_transformer.build(6, image_size=(height, width))  # default tiny ViT: 192/6/3
    assert model.backbone.patch_size == patch and model.backbone.grid == (16, 8)
    assert (model.num_row_parts, model.num_column_parts, model.num_parts) == (16, 8, 24)
    assert model.embedding_dim == 24 * 192 and model.attribute_form == "groups"
    x = torch.randn(2, 3, height, width)
    out = model.train()(x)
    assert out["features"].shape == (2, 24 * 192)
    assert isinstance(out["id_logits"], list) and len(out["id_logits"]) == 24
    assert all(logits.shape == (2, 6) for logits in out["id_logits"])
    assert out["attribute_logits"].shape == (2, 41)
    with torch.no_grad():
        out = model.eval()(x)
    assert out["embedding"].shape == (2, model.embedding_dim)
    torch.testing.assert_close(out["embedding"].norm(dim=1), torch.ones(2))
    assert out["attribute_logits"].shape == (2, 41)


def test_la_transformer_runs_at_another_input_size():
    model = _tiny_la(image_size=(256, 128)).eval()  # patch 16; a 128x64 input gives an 8x4 grid
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 64))
    assert out["embedding"].shape == (1, 24 * 48)


@pytest.mark.parametrize(
    "options,rows,columns",
    [
        ({}, 16, 8),
        ({"row_parts": 4, "column_parts": 2}, 4, 2),
        ({"row_parts": 14}, 14, 8),
        ({"use_columns": False}, 16, 0),
    ],
)
def test_la_transformer_number_of_parts(options, rows, columns):
    model = _tiny_la(num_ids=3, **options).train()
    assert (model.num_row_parts, model.num_column_parts) == (rows, columns)
    out = model(torch.randn(2, 3, 256, 128))
    assert len(out["id_logits"]) == rows + columns
    assert out["features"].shape == (2, (rows + columns) * 48)
    tokens, grid = model.backbone(torch.randn(2, 3, 256, 128))
    assert model.parts(tokens, grid).shape == (2, rows + columns, 48)


def test_pool_parts_hand_computed():
    # grid 4 rows x 2 columns, D = 1: token value = 10 * row + column
    values = torch.tensor([[10.0 * r + c for r in range(4) for c in range(2)]]).T[None]  # (1, 8, 1)
    rows, columns = la_transformer.pool_parts(values, (4, 2), row_parts=2, column_parts=2)
    assert rows.flatten().tolist() == [5.5, 25.5]  # rows {0,1} and {2,3}, both columns
    assert columns.flatten().tolist() == [15.0, 16.0]  # each column over all rows


def test_la_transformer_local_tokens_use_cls():
    torch.manual_seed(4)
    model = _tiny_la(lambda_global=0.8)
    tokens, grid = model.backbone(torch.randn(2, 3, 256, 128))
    changed = tokens.clone()
    delta = torch.randn(2, 48)
    changed[:, 0] += delta  # only the CLS token changes
    difference = model.parts(changed, grid) - model.parts(tokens, grid)  # (B, P, D)
    torch.testing.assert_close(difference, 0.8 * delta[:, None].expand_as(difference))
    model.lambda_global = 0.0
    torch.testing.assert_close(model.parts(changed, grid), model.parts(tokens, grid))


def test_la_transformer_options():
    model = _tiny_la(num_ids=0, part_embedding="mean", classifier="cosine", attribute_form="binary")
    assert model.embedding_dim == 48 and len(model.part_classifiers) == 0
    out = model.train()(torch.randn(2, 3, 256, 128))
    assert out["id_logits"] is None and out["attribute_logits"].shape == (2, 30)
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 256, 128))["embedding"].shape == (2, 48)
    cosine = _tiny_la(num_ids=3, classifier="cosine").train()  # id_logits exist in training only; dropout 0
    heads = [m for m in cosine.modules() if isinstance(m, CosineClassifier)]
    assert len(heads) == len(cosine.part_classifiers) > 0  # one per part
    x = torch.randn(2, 3, 256, 128)
    with torch.no_grad():
        logits = cosine(x)["id_logits"]
        assert all(part.abs().max() <= 1 + 1e-5 for part in logits)
        for head in heads:
            head.weight.mul_(1000)
        torch.testing.assert_close(cosine(x)["id_logits"], logits)  # cosines ignore the weights' norms
    with pytest.raises(ConfigError, match="classifier"):
        _tiny_la(classifier="arcface")
    with pytest.raises(ConfigError, match="patch_size"):
        _tiny_la(patch_size=12)
    with pytest.raises(ConfigError, match="embed_dim=768"):
        la_transformer.build(3, pretrained=True, embed_dim=192)
    via_registry = build_model("la_transformer", 2, embed_dim=48, depth=1, num_heads=2, image_size=(128, 64))
    assert via_registry.attribute_form == "groups" and via_registry.backbone.patch_size == 8


# ---------------------------------------------------------------------------------------------
# Pretrained weights (never touches the network)


def _offline(entry):
    raise urllib.error.URLError("no network in tests")


def test_pretrained_download_failure_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backbones, "_download_state_dict", _offline)
    builders = (lambda: la_transformer.build(3, pretrained=True), lambda: alm.build(3, pretrained=True, depth=18))
    for make in builders:
        with pytest.raises(ReidError, match="pretrained=False") as info:
            make()
        assert "weights_path" in str(info.value) and "\n" not in str(info.value)


def test_rectangular_vit_matches_torchvision_forward():
    """Same parameter names and the same computation as torchvision's VisionTransformer (square case)."""
    torch.manual_seed(5)
    reference = torchvision.models.VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    reference.eval()
    ours = la_transformer.RectangularViT((32, 32), 8, embed_dim=16, depth=2, num_heads=2, mlp_dim=32).eval()
    state = {k: v for k, v in reference.state_dict().items() if not k.startswith("heads.")}
    ours.load_state_dict(state)  # strict: identical names and shapes
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        tokens, grid = ours(x)
        patches = reference._process_input(x)
        expected = reference.encoder(torch.cat([reference.class_token.expand(2, -1, -1), patches], dim=1))
    assert grid == (4, 4)
    torch.testing.assert_close(tokens, expected)


def test_pretrained_vit_b_16_is_adapted(monkeypatch):
    """Fake 'downloaded' vit_b_16 weights, loaded at 128x64: resized grid, area-resampled patch kernel."""
    torch.manual_seed(6)
    with torch.device("meta"):
        reference = torchvision.models.vit_b_16()
    reference = reference.to_empty(device="cpu")
    for parameter in reference.parameters():
        torch.nn.init.normal_(parameter, std=0.02)
    monkeypatch.setattr(backbones, "_download_state_dict", lambda entry: reference.state_dict())
    model = la_transformer.build(3, pretrained=True, image_size=(128, 64))
    backbone = model.backbone
    assert backbone.patch_size == 8 and backbone.grid == (16, 8) and backbone.embed_dim == 768
    assert backbone.encoder.pos_embedding.shape == (1, 1 + 16 * 8, 768)
    torch.testing.assert_close(backbone.encoder.pos_embedding[:, 0], reference.encoder.pos_embedding[:, 0])
    torch.testing.assert_close(backbone.class_token, reference.class_token)
    last = "encoder.layers.encoder_layer_11.mlp.3.weight"
    torch.testing.assert_close(backbone.state_dict()[last], reference.state_dict()[last])
    flat = torch.full((1, 3, 16, 16), 0.3)  # a flat patch embeds the same at half resolution
    with torch.no_grad():
        half = backbone.conv_proj(flat[..., :8, :8])
        torch.testing.assert_close(half, reference.conv_proj(flat), rtol=1e-4, atol=1e-4)


def test_resize_pos_embedding_keeps_cls_and_identity():
    pos = torch.randn(1, 1 + 4 * 2, 3)
    assert la_transformer.resize_pos_embedding(pos, (4, 2), (4, 2)) is pos
    resized = la_transformer.resize_pos_embedding(pos, (4, 2), (8, 4))
    assert resized.shape == (1, 1 + 32, 3)
    torch.testing.assert_close(resized[:, 0], pos[:, 0])
    flat = torch.cat([pos[:, :1], torch.full((1, 8, 3), 0.7)], dim=1)  # a constant grid stays constant
    resized_flat = la_transformer.resize_pos_embedding(flat, (4, 2), (3, 5))
    torch.testing.assert_close(resized_flat[:, 1:], torch.full((1, 15, 3), 0.7))

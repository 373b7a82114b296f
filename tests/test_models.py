"""Contract tests for the registry, the ResNet-based models (resnet50, apr, convhead,
self_attention, cbam), pretrained-weight loading and the model summary.

ALM and LA-Transformer have their own file (test_models_alm_la.py). Models use depth 18
here to stay fast on CPU; one APR test uses the paper's ResNet-50.
"""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torchvision

from reid_utils.errors import CheckpointError, ConfigError, ReidError
from reid_utils.models import DEFAULT_ATTRIBUTE_FORM, MODEL_NAMES, backbones, build_model, model_summary
from reid_utils.models.backbones import build_resnet
from reid_utils.models.heads import CosineClassifier
from reid_utils.models.resnet import SpatialSelfAttention
from reid_utils.schema import GROUP_SLICES, NUM_BINARY, NUM_GROUP_LOGITS, num_attribute_logits

OWN_MODELS = ("resnet50", "apr", "convhead", "self_attention", "cbam")
SIZES = ((256, 128), (128, 64))
NUM_IDS = 7


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _batch(height: int, width: int) -> torch.Tensor:
    return torch.randn(2, 3, height, width)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", OWN_MODELS)
def test_forward_contract(name, size):
    model = build_model(name, NUM_IDS, depth=18)
    num_logits = num_attribute_logits(DEFAULT_ATTRIBUTE_FORM[name])
    assert model.attribute_form == DEFAULT_ATTRIBUTE_FORM[name]
    assert model.num_ids == NUM_IDS

    model.train()
    out = model(_batch(*size))
    # what the metric losses see: the embedding, or (apr) the pooled trunk feature
    assert out["features"].shape == (2, 512 if name == "apr" else model.embedding_dim)
    assert out["id_logits"].shape == (2, NUM_IDS)
    assert out["attribute_logits"].shape == (2, num_logits)

    model.eval()
    with torch.no_grad():
        out = model(_batch(*size))
    assert out["embedding"].shape == (2, model.embedding_dim)
    assert out["attribute_logits"].shape == (2, num_logits)
    assert "id_logits" not in out and "features" not in out
    assert torch.isfinite(out["embedding"]).all()


def test_apr_resnet50_shapes_and_arm():
    model = build_model("apr", NUM_IDS)  # the paper's ResNet-50 trunk
    assert model.trunk.out_channels == 2048
    assert model.embedding_dim == 512 + NUM_GROUP_LOGITS
    model.train()
    out = model(_batch(128, 64))
    assert out["features"].shape == (2, 2048)
    assert out["embedding"].shape == (2, 553)
    assert out["id_logits"].shape == (2, NUM_IDS)
    assert out["attribute_logits"].shape == (2, NUM_GROUP_LOGITS)
    assert out["arm_weights"].shape == (2, 12)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_arm_weights_sum_to_one_and_reweight_predictions(training):
    model = build_model("apr", NUM_IDS, depth=18).train(training)
    with torch.set_grad_enabled(training):
        out = model(_batch(64, 32))
    weights = out["arm_weights"]
    assert weights.shape == (2, 12)
    assert (weights >= 0).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))
    # The attribute part of the embedding is 12 * w_g * softmax(group logits).
    reweighted = out["embedding"][:, 512:]
    for g, s in enumerate(GROUP_SLICES):
        expected = 12 * weights[:, g : g + 1] * out["attribute_logits"][:, s].softmax(dim=1)
        torch.testing.assert_close(reweighted[:, s], expected)


def test_apr_metric_features_are_the_pooled_trunk_feature():
    # BNNeck-style: triplet / center losses act before the bottleneck, so dropout never reaches them.
    model = build_model("apr", NUM_IDS, depth=18).train()
    x = _batch(64, 32)
    out = model(x)
    torch.testing.assert_close(out["features"], model.trunk(x).mean(dim=(2, 3)))
    assert out["embedding"].shape == (2, 553)


def test_apr_retrieval_embedding_is_the_batchnorm_output_before_the_activation():
    model = build_model("apr", NUM_IDS, depth=18).eval()
    x = _batch(64, 32)
    with torch.no_grad():
        out = model(x)
        bottleneck = model.bottleneck
        normalised = bottleneck.bn(bottleneck.fc(model.trunk(x).mean(dim=(2, 3))))
    torch.testing.assert_close(out["embedding"][:, :512], normalised)
    assert (normalised < 0).any()  # not clipped by the LeakyReLU


def test_apr_loads_a_state_dict_saved_before_the_bottleneck_layers_had_names():
    model = build_model("apr", NUM_IDS, depth=18).eval()
    old_style = {k.replace("bottleneck.fc.", "bottleneck.block.0.").replace("bottleneck.bn.", "bottleneck.block.1."): v
                 for k, v in model.state_dict().items()}
    assert "bottleneck.block.1.running_var" in old_style
    fresh = build_model("apr", NUM_IDS, depth=18).eval()
    fresh.load_state_dict(old_style)
    x = _batch(64, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x)["embedding"], model(x)["embedding"])


def test_apr_identity_loss_reaches_attribute_classifiers_and_arm():
    model = build_model("apr", NUM_IDS, depth=18).train()
    out = model(_batch(64, 32))
    torch.nn.functional.cross_entropy(out["id_logits"], torch.tensor([0, 1])).backward()
    assert model.arm.fc.weight.grad.abs().sum() > 0
    assert all(head.weight.grad.abs().sum() > 0 for head in model.attribute_classifiers)


def test_apr_binary_form():
    model = build_model("apr", NUM_IDS, attribute_form="binary", depth=18).eval()
    with torch.no_grad():
        out = model(_batch(64, 32))
    assert out["attribute_logits"].shape == (2, NUM_BINARY)
    assert out["embedding"].shape == (2, 512 + NUM_BINARY)
    torch.testing.assert_close(out["arm_weights"].sum(dim=1), torch.ones(2))


@pytest.mark.parametrize("name", OWN_MODELS)
def test_num_ids_zero_gives_no_identity_logits(name):
    model = build_model(name, 0, depth=18).train()
    out = model(_batch(64, 32))
    assert out["id_logits"] is None
    assert out["attribute_logits"].shape[1] == num_attribute_logits(model.attribute_form)
    out["attribute_logits"].sum().backward()  # attribute-only training works


@pytest.mark.parametrize("name", ["resnet50", "apr"])
def test_cosine_classifier_logits_are_cosines(name):
    model = build_model(name, NUM_IDS, depth=18, classifier="cosine").train()  # id_logits exist in training only
    heads = [m for m in model.modules() if isinstance(m, CosineClassifier)]
    assert len(heads) == 1
    x = _batch(64, 32)

    def id_logits():
        torch.manual_seed(1)  # the same dropout masks on every call (BatchNorm uses the batch's statistics)
        with torch.no_grad():
            return model(x)["id_logits"]

    logits = id_logits()
    assert logits.shape == (2, NUM_IDS)
    assert logits.min() >= -1 - 1e-5 and logits.max() <= 1 + 1e-5
    with torch.no_grad():
        heads[0].weight.mul_(1000)
    torch.testing.assert_close(id_logits(), logits)  # cosines ignore the weights' norms; a linear layer would not


@pytest.mark.parametrize("block", [None, "cbam"])
def test_last_stride_one_doubles_final_map(block):
    from reid_utils.models.cbam import CBAMBasicBlock

    x = _batch(128, 64)
    kwargs = {"block": CBAMBasicBlock} if block else {}
    with torch.no_grad():
        strided = build_resnet(18, last_stride=2, **kwargs).eval()(x)
        unstrided = build_resnet(18, last_stride=1, **kwargs).eval()(x)
    assert strided.shape == (2, 512, 4, 2)
    assert unstrided.shape == (2, 512, 8, 4)


def test_feature_maps_of_three_levels():
    trunk = build_resnet(18, last_stride=1)
    with torch.no_grad():
        maps = trunk.eval().feature_maps(_batch(256, 128))
    assert [tuple(m.shape) for m in maps] == [(2, 128, 32, 16), (2, 256, 16, 8), (2, 512, 16, 8)]
    assert trunk.channels == {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}


def test_trunk_keys_match_torchvision():
    reference = torchvision.models.resnet18(weights=None).state_dict()
    expected = {k for k in reference if not k.startswith("fc.")}
    assert set(build_resnet(18).state_dict()) == expected


def test_self_attention_block_starts_as_identity_and_resizes_positions():
    block = SpatialSelfAttention(16, num_heads=4).eval()
    x = torch.randn(2, 16, 8, 4)  # a map smaller than the 16x8 positional grid
    with torch.no_grad():
        y = block(x)
    pos = torch.nn.functional.interpolate(block.pos_embedding, size=(8, 4), mode="bilinear", align_corners=False)
    torch.testing.assert_close(y, x + pos)


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_names_and_default_forms():
    assert set(MODEL_NAMES) == {"resnet50", "apr", "convhead", "self_attention", "cbam", "alm", "la_transformer", "osnet"}
    assert set(DEFAULT_ATTRIBUTE_FORM) == set(MODEL_NAMES)
    assert DEFAULT_ATTRIBUTE_FORM["cbam"] == DEFAULT_ATTRIBUTE_FORM["alm"] == "binary"


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet51'") as excinfo:
        build_model("resnet51", NUM_IDS)
    for name in MODEL_NAMES:
        assert name in str(excinfo.value)


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="'depht'.*depth"):
        build_model("resnet50", NUM_IDS, depht=18)


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="classifier"):
        build_model("resnet50", NUM_IDS, depth=18, classifier="arcface")
    with pytest.raises(ValueError, match="attribute form"):
        build_model("resnet50", NUM_IDS, attribute_form="grouped", depth=18)
    with pytest.raises(ValueError, match="depth"):
        build_model("resnet50", NUM_IDS, depth=101)
    with pytest.raises(ValueError, match="num_ids"):
        build_model("resnet50", -1, depth=18)


# ---------------------------------------------------------------------------------------------
# Pretrained weights


def test_pretrained_without_internet_raises_clear_error(monkeypatch):
    def offline(weights):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(backbones, "_download_state_dict", offline)
    with pytest.raises(ReidError, match="pretrained=False.*weights_path") as excinfo:
        build_model("apr", NUM_IDS, depth=18, pretrained=True)
    assert "ResNet18_Weights" in str(excinfo.value)
    assert "\n" not in str(excinfo.value)


def test_weights_path_loads_a_saved_state_dict(tmp_path):
    reference = torchvision.models.resnet18(weights=None)  # a torchvision file, fc.* included
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    trunk = build_resnet(18, weights_path=path)
    torch.testing.assert_close(trunk.layer4[1].conv2.weight, reference.layer4[1].conv2.weight)

    # Through the registry, into a model with new layers (CBAM) that the file does not have.
    model = build_model("cbam", NUM_IDS, depth=18, weights_path=str(path))
    torch.testing.assert_close(model.trunk.conv1.weight, reference.conv1.weight)

    # A training checkpoint nesting the weights under "state_dict" with a DataParallel prefix.
    nested = tmp_path / "nested.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in reference.state_dict().items()}}, nested)
    torch.testing.assert_close(build_resnet(18, weights_path=nested).bn1.weight, reference.bn1.weight)


def test_weights_path_missing_or_mismatched_is_rejected(tmp_path):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(CheckpointError, match="nowhere.pth does not exist"):
        build_model("resnet50", NUM_IDS, depth=18, weights_path=missing)

    wrong_depth = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong_depth)
    with pytest.raises(CheckpointError, match="resnet18.pth does not match.*missing key") as excinfo:
        build_resnet(34, weights_path=wrong_depth)
    assert "\n" not in str(excinfo.value)

    wrong_shape = tmp_path / "shape.pth"
    state = torchvision.models.resnet18(weights=None).state_dict()
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    torch.save(state, wrong_shape)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*conv1.weight"):
        build_resnet(18, weights_path=wrong_shape)

    garbage = tmp_path / "garbage.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        build_resnet(18, weights_path=garbage)


# ---------------------------------------------------------------------------------------------
# Summary


def test_model_summary_resnet50_trunk():
    trunk = build_resnet(50, last_stride=2).train()
    summary = model_summary(trunk, 256, 128)
    assert set(summary) == {"params", "gflops"}
    assert summary["params"] == 23_508_032  # torchvision ResNet-50 without fc: ~23.5M
    # ~4.1 G multiply-adds at 224x224 (torchvision's figure), 256x128 is 0.65 of that area,
    # and the counter reports 2 FLOPs per multiply-add: ~5.3 GFLOPs.
    assert 5.0 < summary["gflops"] < 5.7
    assert trunk.training  # mode restored


def test_model_summary_counts_attention_and_heads():
    base = model_summary(build_model("resnet50", NUM_IDS, depth=18), 128, 64)
    attention = model_summary(build_model("self_attention", NUM_IDS, depth=18), 128, 64)
    assert attention["params"] > base["params"]
    assert attention["gflops"] > base["gflops"]  # the fused attention path is counted too

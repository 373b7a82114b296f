"""OSNet (omni-scale trunk under the APR-Net head) and APR's part-pooled attribute heads.

The registry-wide contracts (loss decreases, checkpoint round trip, ONNX, activation maps)
cover ``osnet`` through ``MODEL_NAMES``; this file checks what is particular to each.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from reid_utils.config import TrainConfig
from reid_utils.engine.checkpoint import load_model_from_checkpoint, save_checkpoint
from reid_utils.errors import ConfigError
from reid_utils.losses import MultiTaskLoss
from reid_utils.models import build_model, build_model_from_config, model_summary
from reid_utils.models.apr import PART_GROUPS, APRNet
from reid_utils.models.osnet import AggregationGate, OSBlock, OSNetTrunk
from reid_utils.schema import GROUP_NAMES, GROUP_SLICES, GROUPS

NUM_IDS = 5


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# OSNet


def test_osnet_trunk_shapes_size_and_cost():
    trunk = OSNetTrunk().eval()
    with torch.no_grad():
        assert trunk(torch.randn(2, 3, 128, 64)).shape == (2, 512, 8, 4)  # ResNet-18's map at last stride 1
        assert trunk(torch.randn(1, 3, 256, 128)).shape == (1, 512, 16, 8)
    # the paper: 2.2 M parameters and 0.98 G multiply-adds at 256x128 with its 512-d fc layer
    # (512 * 512 weights, 0.26 M); the counter counts a multiply-add as 2 FLOPs
    params = sum(p.numel() for p in trunk.parameters())
    assert 1.8e6 < params + 512 * 512 < 2.4e6, params
    gmacs = model_summary(trunk, 256, 128)["gflops"] / 2
    assert 0.85 < gmacs < 1.1, gmacs
    # a quarter of that at the CPU size, against 1.0 GFLOPs-counted for ResNet-18
    assert model_summary(trunk, 128, 64)["gflops"] == pytest.approx(model_summary(trunk, 256, 128)["gflops"] / 4, rel=0.02)


def test_os_block_streams_gate_and_shortcut():
    block = OSBlock(32, 64)
    assert [len(stream) for stream in block.streams] == [1, 2, 3, 4]  # receptive fields 3, 5, 7, 9
    assert isinstance(block.shortcut, nn.Sequential)  # a projection where the widths differ
    assert isinstance(OSBlock(64, 64).shortcut, nn.Identity)
    # one gate shared by the four streams: its parameters appear once
    assert sum(1 for name, _ in block.named_parameters() if name.startswith("gate.")) == 4


def test_os_block_receptive_field_reaches_nine_pixels():
    """One pixel changed in the input moves outputs 4 pixels away (the 4-layer stream's 9x9
    field), and nothing 5 or more away except through the gate's global pooling (frozen here)."""
    block = OSBlock(8, 8).eval()
    block.gate = nn.Identity()  # the gate pools the whole map: take it out to see the local field
    x = torch.randn(1, 8, 21, 21)
    y = x.clone()
    y[0, :, 10, 10] += 5.0
    with torch.no_grad():
        diff = (block(y) - block(x)).abs().sum(dim=1)[0]  # (21, 21)
    changed = (diff > 1e-6).nonzero()
    assert (changed - 10).abs().max() == 4


def test_aggregation_gate_is_a_sigmoid_of_the_pooled_input():
    gate = AggregationGate(32)
    nn.init.zeros_(gate.fc2.weight)
    nn.init.zeros_(gate.fc2.bias)
    x = torch.randn(2, 32, 4, 4)
    torch.testing.assert_close(gate(x), 0.5 * x)  # sigmoid(0) = 1/2
    # the gate depends on the input: two images get different channel weights
    nn.init.normal_(gate.fc2.weight)
    weights = gate(torch.ones(2, 32, 4, 4) * torch.tensor([1.0, -1.0])[:, None, None, None]) / torch.tensor(
        [1.0, -1.0])[:, None, None, None]
    assert not torch.allclose(weights[0], weights[1])
    assert ((weights > 0) & (weights < 1)).all()


def test_osnet_is_apr_on_an_osnet_trunk():
    model = build_model("osnet", NUM_IDS)
    assert isinstance(model, APRNet) and isinstance(model.trunk, OSNetTrunk)
    assert model.embedding_dim == 553 and model.attribute_form == "groups"
    model.train()
    out = model(torch.randn(4, 3, 128, 64))
    assert out["features"].shape == (4, 512) and out["id_logits"].shape == (4, NUM_IDS)


def test_osnet_weights_file_and_no_torchvision_weights(tmp_path):
    with pytest.raises(ConfigError, match="osnet has no torchvision ImageNet weights"):
        build_model("osnet", NUM_IDS, pretrained=True)
    source = OSNetTrunk()
    path = tmp_path / "osnet_trunk.pth"
    torch.save(source.state_dict(), path)
    model = build_model("osnet", NUM_IDS, weights_path=path)
    for key, value in source.state_dict().items():
        torch.testing.assert_close(model.trunk.state_dict()[key], value)


# ---------------------------------------------------------------------------------------------
# Part-pooled attribute heads


class _FixedMap(nn.Module):
    """A stand-in trunk that returns its input: the test writes the feature map directly."""

    out_channels = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _part_model() -> APRNet:
    model = APRNet(_FixedMap(), NUM_IDS, bottleneck_dim=8, dropout=0.0, attribute_pooling="parts")
    with torch.no_grad():  # the classifiers read only their part feature, not the global f
        for head in model.attribute_classifiers:
            head.weight[:, :8] = 0.0
    return model.eval()


def test_part_groups_read_only_their_half():
    model = _part_model()
    fmap = torch.randn(3, 16, 8, 4)
    moved_down, moved_up = fmap.clone(), fmap.clone()
    moved_down[:, :, 4:] += torch.randn(3, 16, 4, 4)  # only the lower half changes
    moved_up[:, :, :4] += torch.randn(3, 16, 4, 4)
    with torch.no_grad():
        base, down, up = (model(m)["attribute_logits"] for m in (fmap, moved_down, moved_up))
    for name in PART_GROUPS["upper"]:
        s = GROUP_SLICES[GROUP_NAMES.index(name)]
        torch.testing.assert_close(down[:, s], base[:, s])
        assert not torch.allclose(up[:, s], base[:, s])
    for name in PART_GROUPS["lower"]:
        s = GROUP_SLICES[GROUP_NAMES.index(name)]
        torch.testing.assert_close(up[:, s], base[:, s])
        assert not torch.allclose(down[:, s], base[:, s])


def test_global_groups_and_widths_under_part_pooling():
    model = _part_model()
    parts = dict(zip(GROUP_NAMES, model.classifier_parts))
    assert {name for name, part in parts.items() if part == "upper"} == set(PART_GROUPS["upper"])
    assert {name for name, part in parts.items() if part == "lower"} == set(PART_GROUPS["lower"])
    for group, head, part in zip(GROUPS, model.attribute_classifiers, model.classifier_parts):
        assert head.weight.shape == (group.num_classes, 8 + (256 if part else 0))
    # the default is the paper's head: every group reads f, no part layers
    plain = build_model("apr", NUM_IDS, depth=18)
    assert set(plain.classifier_parts) == {None} and len(plain.part_bottlenecks) == 0


def test_part_pooling_trains_and_round_trips(tmp_path):
    cfg = TrainConfig.from_overrides(model="apr", height=64, width=32, attribute_pooling="parts", dropout=0.0)
    model = build_model_from_config(cfg, NUM_IDS)
    assert model.attribute_pooling == "parts"
    loss_fn = MultiTaskLoss(alpha=0.5, attribute_form="groups")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    images = torch.randn(10, 3, 64, 32)
    pids = torch.arange(10) % NUM_IDS
    attributes = torch.stack([torch.randint(g.num_classes, (10,)) for g in GROUPS], dim=1)  # (10, 12)
    model.train()
    losses = []
    for _ in range(15):
        total, _ = loss_fn(model(images), pids, attributes)
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        losses.append(float(total))
    assert losses[-1] < 0.5 * losses[0], losses
    path = save_checkpoint(tmp_path / "parts.pt", model, cfg, {p: p for p in range(NUM_IDS)}, epoch=1, history={})
    rebuilt, _ = load_model_from_checkpoint(path)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(images)["attribute_logits"], model(images)["attribute_logits"])


@pytest.mark.parametrize("overrides, message", [
    ({"model": "resnet50", "attribute_pooling": "parts"}, "other than apr and osnet"),
    ({"model": "apr", "attribute_form": "binary", "attribute_pooling": "parts"}, 'attribute_form="binary"'),
    ({"model": "apr", "attribute_pooling": "halves"}, "not one of global, parts"),
])
def test_part_pooling_bad_settings_are_named(overrides, message):
    with pytest.raises(ConfigError, match="attribute_pooling") as excinfo:
        TrainConfig.from_overrides(**overrides)
    assert message in str(excinfo.value)


def test_part_pooling_needs_the_groups_form():
    with pytest.raises(ConfigError, match="needs attribute_form"):
        build_model("apr", NUM_IDS, attribute_form="binary", depth=18, attribute_pooling="parts")

"""Activation maps (issue 14): Grad-CAM against a hand-computed case, maps that follow the
evidence, every registry model, and the figure."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import nn

from reid_utils.errors import ConfigError
from reid_utils.export.onnx import check_images
from reid_utils.models import MODEL_NAMES, build_model
from reid_utils.schema import NUM_GROUP_LOGITS
from reid_utils.visualize.activation import activation_maps, plot_activation_maps

pytestmark = pytest.mark.usefixtures("one_thread")


class Toy(nn.Module):
    """A 1x1 conv map ``A`` (B, 4, H, W); the embedding pools all of it, the attribute logits
    only its top half."""

    attribute_form = "groups"

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Conv2d(3, 4, 1)
        self.attributes = nn.Linear(4, NUM_GROUP_LOGITS)

    def forward(self, x):
        a = self.features(x)  # (B, 4, H, W)
        top = a[:, :, : a.shape[2] // 2]
        return {"embedding": a.mean(dim=(2, 3)), "attribute_logits": self.attributes(top.mean(dim=(2, 3)))}


def test_grad_cam_equals_the_hand_computed_map():
    model, x = Toy(), torch.randn(2, 3, 8, 4)
    reference = torch.tensor([1.0, -2.0, 0.5, 0.0])
    maps = activation_maps(model, x, "embedding", reference=reference, layer="features")
    # target <mean_hw(A), r/|r|>: its gradient is r/|r|/(h w) everywhere, so the map is relu(sum_c r_c A_c)
    with torch.no_grad():
        expected = F.relu(torch.einsum("c,bchw->bhw", reference, model.features(x)))
    expected = expected / expected.amax(dim=(1, 2), keepdim=True)
    torch.testing.assert_close(maps, expected)


class RedDetector(nn.Module):
    """``A`` = the input's colour planes (an identity 1x1 conv); every attribute logit reads
    only the mean of the red plane, so red is the only evidence for any class."""

    attribute_form = "groups"

    def __init__(self):
        super().__init__()
        self.features = nn.Conv2d(3, 3, 1, bias=False)
        self.attributes = nn.Linear(3, NUM_GROUP_LOGITS)
        with torch.no_grad():
            self.features.weight.copy_(torch.eye(3)[:, :, None, None])
            self.attributes.weight.zero_()
            self.attributes.weight[:, 0] = torch.linspace(-1, 1, NUM_GROUP_LOGITS)
            self.attributes.bias.zero_()

    def forward(self, x):
        a = self.features(x)  # (B, 3, H, W)
        return {"embedding": a.mean(dim=(2, 3)), "attribute_logits": self.attributes(a.mean(dim=(2, 3)))}


def test_attribute_map_follows_the_evidence():
    x = torch.zeros(2, 3, 16, 8)
    x[:, 2] = 1.0  # blue everywhere ...
    x[0, 0, 2:6, 1:4] = 1.0  # ... and a red patch, at a different place in each image
    x[1, 0, 10:14, 4:8] = 1.0
    model = RedDetector()
    maps = activation_maps(model, x, "downcolour", attribute_class="multicolour", layer="features")  # the last
    # logit, the one red raises most: the map is the red plane
    red = x[:, 0] > 0
    assert (maps[red] == 1).all() and (maps[~red] == 0).all()
    against = activation_maps(model, x, "downcolour", attribute_class="black", layer="features")
    assert (against == 0).all()  # red is evidence against "black" only: no positive evidence anywhere


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_gives_maps_for_embedding_and_attributes(name):
    options = {"la_transformer": {"image_size": (64, 32)}, "osnet": {}}.get(name, {"depth": 18})
    torch.manual_seed(0)
    model = build_model(name, num_ids=4, **options).train()
    paths = check_images(count=3)
    embedding = activation_maps(model, paths, "embedding", image_size=(64, 32))
    attribute = activation_maps(model, paths, "gender", image_size=(64, 32))
    for maps in (embedding, attribute):
        assert maps.shape == (3, 64, 32) and torch.isfinite(maps).all() and maps.min() >= 0
        peaks = maps.amax(dim=(1, 2))
        ones = (peaks - 1).abs() < 1e-5
        assert ones.sum() >= 2 and (ones | (peaks == 0)).all()  # scaled to a peak of 1, or no evidence at all
        assert maps.std() > 0.01  # a map, not a constant
    assert ((embedding.amax(dim=(1, 2)) - 1).abs() < 1e-5).all()  # an image always supports its own embedding
    assert not torch.allclose(embedding, attribute)
    assert model.training and all(p.grad is None for p in model.parameters())  # mode restored, no side effects


def test_reference_changes_the_embedding_map():
    torch.manual_seed(0)
    model = build_model("resnet50", num_ids=0, depth=18)
    paths = check_images(count=2)
    own = activation_maps(model, paths, "embedding", image_size=(64, 32))
    other = torch.randn(model.embedding_dim, generator=torch.Generator().manual_seed(1))  # another direction
    towards = activation_maps(model, paths, "embedding", reference=other, image_size=(64, 32))
    assert (own - towards).abs().max() > 0.05


def test_bad_targets_are_config_errors():
    model, x = Toy(), torch.randn(1, 3, 8, 4)
    for kwargs, word in [({"target": "upcolor"}, "upcolour"), ({"target": "hat", "attribute_class": "maybe"}, "yes"),
                         ({"layer": "nope"}, "named_modules")]:
        kwargs.setdefault("layer", "features")
        kwargs.setdefault("target", "embedding")
        with pytest.raises(ConfigError, match=word):
            activation_maps(model, x, **kwargs)


def test_plot_activation_maps(tmp_path):
    paths = check_images(count=3)
    maps = {"embedding": torch.rand(3, 4, 2), "upcolour": torch.rand(3, 64, 32)}
    fig = plot_activation_maps(paths, maps, titles=["query", "1", "2"], path=tmp_path / "maps.png")
    assert isinstance(fig, Figure) and len(fig.axes) == 3 * 3
    assert fig.axes[0].get_title() == "query" and (tmp_path / "maps.png").stat().st_size > 0

"""TrainConfig: overrides, per-model defaults, validation, serialisation, CLI metadata."""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest

from reid_utils.config import (
    MODEL_NAMES,
    OPTIMIZER_DEFAULTS,
    SMOKE_SETTINGS,
    TrainConfig,
    defaults_for,
)
from reid_utils.errors import ConfigError
from reid_utils.models import model_kwargs


def test_defaults_are_the_cpu_recipe():
    cfg = TrainConfig()
    assert (cfg.model, cfg.height, cfg.width, cfg.depth, cfg.pretrained) == ("apr", 128, 64, 18, False)
    assert cfg.batch_size == cfg.batch_p * cfg.batch_k == 64
    assert not cfg.uses_metric_loss  # apr: identity + attributes, shuffled batches
    assert TrainConfig.from_overrides(model="resnet50").uses_metric_loss  # baselines: + triplet, PK batches
    assert TrainConfig.from_overrides() == cfg  # the field defaults are apr's recipe
    assert cfg.pad_pixels == 5  # 10 px at 256x128, scaled with the height


def test_unknown_name_lists_valid_names_and_suggests():
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_overrides(learning_rate=0.1)
    message = str(info.value)
    assert "'learning_rate'" in message and "valid options:" in message
    for name in ("lr", "num_epochs", "batch_p", "out_dir"):
        assert name in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match=r"'epochs' \(did you mean 'num_epochs'\?\)"):
        TrainConfig.from_overrides(epochs=3)
    with pytest.raises(ConfigError, match=r"did you mean 'lr'"):
        TrainConfig().replace(lr_rate=0.1)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({"lr": 0.0}, "lr=0.0 is out of range"),
        ({"alpha": 1.5}, "alpha=1.5"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"depth": 20}, "depth=20"),
        ({"batch_k": 1, "triplet_weight": 1.0}, "batch_k=1"),  # triplet needs positives
        ({"erasing": 2.0}, "erasing=2.0"),
        ({"gamma": 0.0}, "gamma"),
        ({"num_epochs": 0}, "num_epochs=0"),
        ({"val_every": 0}, "val_every=0"),
        ({"device": "tpu"}, "device='tpu'"),
        ({"model": "resnet"}, "model='resnet' is not one of"),
        ({"optimizer": "rmsprop"}, "optimizer='rmsprop' is not one of"),
        ({"precision": "fp8"}, "precision='fp8' is not one of"),
        ({"lr": "fast"}, "wrong type, expected float"),
        ({"num_epochs": 2.5}, "wrong type, expected int"),
        ({"model": "la_transformer", "height": 100, "width": 64}, "not divisible"),
    ],
)
def test_out_of_range_values_raise(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        TrainConfig.from_overrides(**overrides)


def test_batch_k_one_is_fine_without_metric_loss():
    cfg = TrainConfig.from_overrides(triplet_weight=0.0, batch_k=1)
    assert not cfg.uses_metric_loss


def test_cli_style_strings_and_paths_are_coerced(tmp_path):
    cfg = TrainConfig.from_overrides(lr="1e-3", num_epochs="5", progress="false", triplet_margin="none",
                                     out_dir=tmp_path / "run")
    assert cfg.lr == 1e-3 and cfg.num_epochs == 5 and cfg.progress is False and cfg.triplet_margin is None
    assert cfg.out_dir == str(tmp_path / "run")
    assert TrainConfig.from_overrides(lr=1).lr == 1.0 and isinstance(TrainConfig.from_overrides(lr=1).lr, float)


def test_per_model_defaults_and_precedence():
    la = TrainConfig.from_overrides(model="la_transformer")
    assert la.id_loss == "amsoftmax" and la.triplet_weight > 0 and la.lr == defaults_for("la_transformer")["lr"]
    assert TrainConfig.from_overrides(model="la_transformer", lr=1e-4).lr == 1e-4  # caller wins
    cbam = TrainConfig.from_overrides(model="cbam")
    assert cbam.attribute_weighting == "frequency" and not cbam.uses_metric_loss
    assert TrainConfig.from_overrides(model="alm").attribute_weighting == "exp"
    # choosing another optimizer brings that optimizer's lr / weight decay, not the model's
    sgd = TrainConfig.from_overrides(model="la_transformer", optimizer="sgd")
    assert (sgd.lr, sgd.weight_decay) == (OPTIMIZER_DEFAULTS["sgd"]["lr"], OPTIMIZER_DEFAULTS["sgd"]["weight_decay"])
    assert TrainConfig.from_overrides(optimizer="adam").lr == OPTIMIZER_DEFAULTS["adam"]["lr"]
    # replace() changes only what it is given
    assert TrainConfig().replace(model="la_transformer").id_loss == "ce"


def test_smoke_settings_apply_but_explicit_values_win():
    cfg = TrainConfig.from_overrides(smoke=True)
    for key, value in SMOKE_SETTINGS.items():
        assert getattr(cfg, key) == value
    assert TrainConfig.from_overrides(smoke=True, num_epochs=2).num_epochs == 2


def test_dict_round_trip_and_tolerant_loading():
    cfg = TrainConfig.from_overrides(model="alm", lr=0.01, pad=3)
    data = cfg.to_dict()
    assert TrainConfig.from_dict(data) == cfg
    with pytest.raises(ConfigError, match="unknown option"):
        TrainConfig.from_dict({**data, "from_the_future": 1})
    assert TrainConfig.from_dict({**data, "from_the_future": 1}, strict=False) == cfg


def test_model_names_match_the_registry():
    from reid_utils.models import DEFAULT_ATTRIBUTE_FORM, MODEL_NAMES as REGISTRY

    assert set(MODEL_NAMES) == set(REGISTRY) == set(DEFAULT_ATTRIBUTE_FORM)
    assert set(typing.get_args(typing.get_type_hints(TrainConfig)["model"])) == set(REGISTRY)
    for name in MODEL_NAMES:
        TrainConfig.from_overrides(model=name)  # every model's defaults validate


def test_model_kwargs_follow_each_builder():
    apr = model_kwargs(TrainConfig.from_overrides(depth=34, dropout=0.3))
    assert apr == {"depth": 34, "last_stride": 1, "dropout": 0.3, "classifier": "linear"}
    la = model_kwargs(TrainConfig.from_overrides(model="la_transformer", vit_depth=2, vit_heads=2, depth=50))
    assert la["depth"] == 2 and la["num_heads"] == 2 and la["classifier"] == "cosine"
    assert la["image_size"] == (128, 64) and "last_stride" not in la
    sa = model_kwargs(TrainConfig.from_overrides(model="self_attention", attention_heads=4))
    assert sa["num_heads"] == 4


def test_every_field_has_a_help_line_for_the_cli():
    for field in dataclasses.fields(TrainConfig):
        assert field.metadata.get("help"), f"field {field.name} has no comment"


def test_cli_types_are_simple():
    """The CLI builds one option per field from its type: keep them int/float/str/bool/Literal."""
    hints = typing.get_type_hints(TrainConfig)
    for name, kind in hints.items():
        args = [a for a in typing.get_args(kind) if a is not type(None)] if typing.get_origin(kind) is typing.Union or type(kind).__name__ == "UnionType" else [kind]
        assert len(args) == 1, name
        assert args[0] in (int, float, str, bool) or typing.get_origin(args[0]) is typing.Literal, name


def test_fields_have_comments_in_source():
    source = Path(__import__("reid_utils.config", fromlist=["x"]).__file__).read_text()
    for field in dataclasses.fields(TrainConfig):
        line = next(line for line in source.splitlines() if line.strip().startswith(f"{field.name}:"))
        assert "  # " in line, field.name

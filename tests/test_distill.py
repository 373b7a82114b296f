"""Distillation: the soft-target losses against slow references, the teachers' checks, and a
training that runs with a teacher's targets."""
from __future__ import annotations

import math

import pytest
import torch

from reid_utils.config import TrainConfig
from reid_utils.distillation import attribute_distillation, distillation_kl, teacher_probabilities
from reid_utils.engine import main
from reid_utils.engine.checkpoint import load_checkpoint, save_checkpoint
from reid_utils.errors import ConfigError
from reid_utils.losses import MultiTaskLoss, grouped_cross_entropy, identity_cross_entropy
from reid_utils.models import build_model_from_config
from reid_utils.schema import GROUP_SLICES, NUM_BINARY, NUM_GROUP_LOGITS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _slow_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> float:
    """``T^2 * mean_i sum_c p log(p / q)`` with Python floats."""
    total = 0.0
    for s_row, p_row in zip(student.tolist(), teacher.tolist()):
        scaled = [v / temperature for v in s_row]
        top = max(scaled)
        log_norm = top + math.log(sum(math.exp(v - top) for v in scaled))
        total += sum(p * (math.log(p) - (v - log_norm)) for p, v in zip(p_row, scaled) if p > 0)
    return temperature**2 * total / len(student)


# ---------------------------------------------------------------------------------------------
# Losses


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_distillation_kl_matches_a_slow_reference(temperature):
    student = torch.randn(5, 7) * 3
    teacher = torch.softmax(torch.randn(5, 7) * 2, dim=1)
    teacher[0] = torch.tensor([0.5, 0.5, 0, 0, 0, 0, 0])  # zeros: 0 log 0 counts as 0
    assert distillation_kl(student, teacher, temperature).item() == pytest.approx(
        _slow_kl(student, teacher, temperature), rel=1e-5)


def test_distillation_kl_is_zero_when_the_student_agrees():
    logits = torch.randn(4, 9)
    for temperature in (1.0, 3.0):
        teacher = torch.softmax(logits / temperature, dim=1)
        assert distillation_kl(logits, teacher, temperature).item() == pytest.approx(0.0, abs=1e-6)
        # and positive when it does not
        assert distillation_kl(logits.flip(1), teacher, temperature).item() > 0.01


def test_attribute_distillation_groups_is_the_mean_over_groups():
    student = torch.randn(3, NUM_GROUP_LOGITS)
    _, teacher = teacher_probabilities(None, torch.randn(3, NUM_GROUP_LOGITS), "groups", temperature=4.0)
    expected = sum(_slow_kl(student[:, sl], teacher[:, sl], 1.0) for sl in GROUP_SLICES) / len(GROUP_SLICES)
    assert attribute_distillation(student, teacher, "groups").item() == pytest.approx(expected, rel=1e-5)
    # the attribute targets are probabilities at T = 1 whatever the identity temperature
    own = teacher_probabilities(None, student, "groups", temperature=4.0)[1]
    assert attribute_distillation(student, own, "groups").item() == pytest.approx(0.0, abs=1e-6)


def test_attribute_distillation_binary_is_the_bernoulli_kl():
    student = torch.randn(2, NUM_BINARY)
    p = torch.rand(2, NUM_BINARY)
    p[0, 0], p[1, 1] = 0.0, 1.0
    q = torch.sigmoid(student)
    expected = 0.0
    for pi, qi in zip(p.flatten().tolist(), q.flatten().tolist()):
        expected += (pi * math.log(pi / qi) if pi > 0 else 0.0) + ((1 - pi) * math.log((1 - pi) / (1 - qi)) if pi < 1 else 0.0)
    expected /= p.numel()
    assert attribute_distillation(student, p, "binary").item() == pytest.approx(expected, rel=1e-5)


def test_teacher_probabilities_shapes_and_temperature():
    ids, attributes = teacher_probabilities(torch.tensor([[2.0, 0.0, -2.0]]), torch.randn(1, NUM_GROUP_LOGITS),
                                            "groups", temperature=2.0)
    expected = torch.softmax(torch.tensor([1.0, 0.0, -1.0]), dim=0)
    torch.testing.assert_close(ids[0], expected)
    for sl in GROUP_SLICES:
        assert attributes[0, sl].sum().item() == pytest.approx(1.0, abs=1e-6)


def test_multitask_loss_adds_the_weighted_distillation_term():
    num_ids, alpha, weight, temperature = 6, 0.3, 0.5, 2.0
    loss_fn = MultiTaskLoss(alpha=alpha, num_ids=num_ids, distill_weight=weight, distill_temperature=temperature)
    targets_ids = torch.softmax(torch.randn(10, num_ids), dim=1)  # a 10-image training set
    _, targets_attributes = teacher_probabilities(None, torch.randn(10, NUM_GROUP_LOGITS), "groups", 1.0)
    loss_fn.set_teacher_targets(targets_ids, targets_attributes)
    outputs = {"id_logits": torch.randn(4, num_ids), "attribute_logits": torch.randn(4, NUM_GROUP_LOGITS)}
    pids, attributes, index = torch.tensor([0, 1, 2, 3]), torch.randint(0, 2, (4, 12)), torch.tensor([7, 2, 2, 9])
    total, parts = loss_fn(outputs, pids, attributes, index)
    # the rows of the batch's images, by hand
    l_id = distillation_kl(outputs["id_logits"], targets_ids[index], temperature)
    l_attr = attribute_distillation(outputs["attribute_logits"], targets_attributes[index], "groups")
    assert parts["distill"] == pytest.approx(((1 - alpha) * l_id + alpha * l_attr).item(), rel=1e-5)
    hard = alpha * grouped_cross_entropy(outputs["attribute_logits"], attributes) + (1 - alpha) * identity_cross_entropy(
        outputs["id_logits"], pids)
    assert total.item() == pytest.approx(hard.item() + weight * parts["distill"], rel=1e-5)
    with pytest.raises(ValueError, match="training-set indices"):
        loss_fn(outputs, pids, attributes)
    # off: reported as 0, nothing added
    plain_total, plain_parts = MultiTaskLoss(alpha=alpha, num_ids=num_ids)(outputs, pids, attributes)
    assert plain_parts["distill"] == 0.0 and plain_total.item() == pytest.approx(hard.item(), rel=1e-5)


def test_distillation_alone_moves_a_student_onto_its_teacher():
    """Only the soft-target terms: a linear student on fixed features ends with the teacher's
    identity and attribute probabilities (the gradient points the right way at T > 1)."""
    features = torch.randn(32, 64)  # more features than rows: some weights fit every target
    teacher_ids = torch.softmax(torch.randn(32, 5) * 2 / 4.0, dim=1)
    _, teacher_attributes = teacher_probabilities(None, torch.randn(32, NUM_GROUP_LOGITS) * 2, "groups", 1.0)
    student = torch.nn.Linear(64, 5 + NUM_GROUP_LOGITS)
    optimizer = torch.optim.Adam(student.parameters(), lr=0.05)
    for _ in range(400):
        out = student(features)
        loss = distillation_kl(out[:, :5], teacher_ids, 4.0) + attribute_distillation(out[:, 5:], teacher_attributes, "groups")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = student(features).detach()
    ids, attributes = teacher_probabilities(out[:, :5], out[:, 5:], "groups", 4.0)
    assert (ids - teacher_ids).abs().max() < 0.01
    assert (attributes - teacher_attributes).abs().max() < 0.01


# ---------------------------------------------------------------------------------------------
# Config and teachers


def test_teachers_config_accepts_a_list_and_refuses_am_softmax():
    cfg = TrainConfig.from_overrides(model="apr", teachers=["a/best.pt", " b/best.pt"])
    assert cfg.teachers == "a/best.pt, b/best.pt" and cfg.teacher_paths == ["a/best.pt", "b/best.pt"]
    with pytest.raises(ConfigError, match="id_loss"):
        TrainConfig.from_overrides(model="la_transformer", teachers="a/best.pt")
    with pytest.raises(ConfigError, match="distill_temperature"):
        TrainConfig.from_overrides(model="apr", distill_temperature=0)


def _smoke(root, out, **extra) -> dict:
    return dict(model="apr", smoke=True, num_epochs=2, max_steps=2, data_root=str(root), out_dir=str(out),
                progress=False, **extra)


@pytest.fixture(scope="module")
def teacher_run(tiny_course_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill") / "teacher"
    main(**_smoke(tiny_course_root, out))
    return out


@pytest.mark.parametrize("cache_images", [True, False])  # on-tensor batches and the DataLoader's
def test_a_student_trains_on_its_teachers_targets(tiny_course_root, teacher_run, tmp_path, cache_images):
    teacher = str(teacher_run / "best.pt")
    history = main(**_smoke(tiny_course_root, tmp_path / "student", teachers=f"{teacher},{teacher}",
                            cache_images=cache_images))
    assert all(v > 0 for v in history["train_distill_loss"])
    assert all(v == 0 for v in main(**_smoke(tiny_course_root, tmp_path / "plain"))["train_distill_loss"])
    # the student's checkpoint remembers where its targets came from; the targets are not in it
    ckpt = load_checkpoint(tmp_path / "student" / "best.pt")
    assert ckpt["config"]["teachers"] == f"{teacher},{teacher}"
    assert not any(k.startswith("teacher_") for k in ckpt["loss"])


def test_teachers_that_cannot_teach_fail_naming_the_file(tiny_course_root, teacher_run, tmp_path):
    cfg = TrainConfig.from_overrides(**_smoke(tiny_course_root, tmp_path / "x"))
    pid_to_label = {int(k): int(v) for k, v in load_checkpoint(teacher_run / "best.pt")["pid_to_label"].items()}
    # another model (no identity and attribute logits in eval mode)
    other_cfg = TrainConfig.from_overrides(**{**_smoke(tiny_course_root, tmp_path / "x"), "model": "resnet50"})
    wrong_model = save_checkpoint(tmp_path / "resnet50.pt", build_model_from_config(other_cfg, len(pid_to_label)),
                                  other_cfg, pid_to_label)
    # other identities
    shifted = {pid + 1000: label for pid, label in pid_to_label.items()}
    wrong_ids = save_checkpoint(tmp_path / "ids.pt", build_model_from_config(cfg, len(pid_to_label)), cfg, shifted)
    # another input size
    big_cfg = TrainConfig.from_overrides(**{**_smoke(tiny_course_root, tmp_path / "x"), "height": 128, "width": 64})
    wrong_size = save_checkpoint(tmp_path / "size.pt", build_model_from_config(big_cfg, len(pid_to_label)), big_cfg,
                                 pid_to_label)
    # an AM-Softmax teacher (cosine logits)
    am_cfg = TrainConfig.from_overrides(**{**_smoke(tiny_course_root, tmp_path / "x"), "id_loss": "amsoftmax"})
    wrong_loss = save_checkpoint(tmp_path / "am.pt", build_model_from_config(am_cfg, len(pid_to_label)), am_cfg,
                                 pid_to_label)
    for path, message in ((wrong_model, "cannot teach"), (wrong_ids, "other identities"), (wrong_size, "trained at 128x64"),
                          (wrong_loss, "id_loss='amsoftmax'"), (tmp_path / "missing.pt", "missing")):
        out = tmp_path / f"student_{path.stem}"
        with pytest.raises(Exception, match=message) as error:
            main(**_smoke(tiny_course_root, out, split_file=str(teacher_run / "split.json"), teachers=str(path)))
        assert str(path) in str(error.value)
        assert not out.exists()  # nothing left behind

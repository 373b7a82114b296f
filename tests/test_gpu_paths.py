"""The GPU code paths, checked on a CPU: the precision chosen for each Colab GPU (the CUDA
queries stubbed), the losses that must stay in fp32 under autocast, the GPU check in its dry
run, and the runtime report."""
from __future__ import annotations

import pytest
import torch

from reid_utils.bench.gpu import gpu_check
from reid_utils.engine import runtime
from reid_utils.losses import AMSoftmaxLoss, CenterLoss, batch_hard_triplet_loss
from reid_utils.notebook import versions

#: name -> (compute capability, what torch.cuda.is_bf16_supported() answers with its default
#: including_emulation=True). A T4 and a V100 "support" bf16 by emulation only.
GPUS = {
    "P100": ((6, 0), False),
    "V100": ((7, 0), True),
    "T4": ((7, 5), True),
    "A100": ((8, 0), True),
    "L4": ((8, 9), True),
    "H100": ((9, 0), True),
}


@pytest.fixture
def fake_gpu(monkeypatch):
    def install(name: str) -> None:
        capability, emulated = GPUS[name]

        def is_bf16_supported(including_emulation: bool = True) -> bool:
            return emulated if including_emulation else capability >= (8, 0)

        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"Tesla {name}")

    return install


@pytest.mark.parametrize("name, precision, scaler", [
    ("P100", "fp16", True), ("V100", "fp16", True), ("T4", "fp16", True),
    ("A100", "bf16", False), ("L4", "bf16", False), ("H100", "bf16", False),
])
def test_automatic_precision_per_gpu(fake_gpu, name, precision, scaler):
    fake_gpu(name)
    fp = runtime.fast_path(torch.device("cuda"))
    assert (fp.precision, fp.grad_scaler, fp.cudnn_benchmark, fp.channels_last) == (precision, scaler, True, True)
    assert fp.describe().startswith(f"cuda | {precision} autocast")
    described = runtime.describe_precision(torch.device("cuda"))
    assert described.startswith(precision) and f"{GPUS[name][0][0]}.{GPUS[name][0][1]}" in described


def test_forcing_bf16_on_a_t4_is_refused(fake_gpu):
    fake_gpu("T4")
    with pytest.raises(runtime.ConfigError, match="precision 'bf16' is not supported by Tesla T4"):
        runtime.fast_path(torch.device("cuda"), precision="bf16")
    assert runtime.fast_path(torch.device("cuda"), precision="fp16").grad_scaler


def test_torch_without_including_emulation_falls_back(monkeypatch):
    def old_api():  # torch < 2.3: no including_emulation argument
        return True

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", old_api)
    assert runtime.cuda_supports_bf16("cuda")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_overflow_prone_losses_run_in_fp32_under_autocast(dtype):
    torch.manual_seed(0)
    features = torch.randn(8, 64) * 30  # squared distances ~1e5: more than fp16 holds
    pids = torch.arange(4).repeat_interleave(2)
    cosines = torch.rand(8, 5) * 2 - 1
    labels = torch.arange(8) % 5
    center = CenterLoss(4, 64)
    plain = (batch_hard_triplet_loss(features, pids), AMSoftmaxLoss(30.0, 0.35)(cosines, labels),
             center(features, pids))
    with torch.autocast("cpu", dtype=dtype):
        mixed = (batch_hard_triplet_loss(features, pids), AMSoftmaxLoss(30.0, 0.35)(cosines, labels),
                 center(features, pids))
    for a, b in zip(plain, mixed):
        assert b.dtype == torch.float32 and torch.isfinite(b)
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-6)


def test_gpu_check_dry_run_learns_on_the_cpu():
    report = gpu_check(dry_run=True)
    assert report["device"].endswith("(dry run)") and report["steps"] >= 10
    assert report["loss_fell"] and report["loss_last"] < report["loss_first"]
    assert report["train_images_per_second"] > 0 and report["infer_images_per_second"] > 0
    assert report["eval_rank1"] > 0.5  # 8 learnable identities: chance would be 1/8


def test_runtime_report_names_versions_device_and_precision(monkeypatch):
    text = versions()
    for key in ("python", "torch", "CUDA", "device", "precision"):
        assert key in text
    monkeypatch.setattr("reid_utils.notebook.in_colab", lambda: True)
    assert "Runtime -> Change runtime type" in versions()  # Colab without a GPU: how to get one

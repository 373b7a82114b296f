"""Where and how tensors run: device choice, the fast path (mixed precision, channels_last,
threads, ``torch.compile``) and the few distributed helpers the engine needs.

The fast path is picked automatically and reported in one line at the start of training::

    device = select_device("auto")            # cuda, then mps, then cpu
    fp = fast_path(device)                    # precision="fp32" forces the plain path
    print(fp.describe())                      # "cpu | bf16 autocast | channels_last | 2 threads"
    with autocast(fp):
        outputs = model(images.to(fp.device, memory_format=fp.memory_format))

* CUDA: bf16 autocast where the GPU computes bf16 natively (compute capability 8.0 or
  later: A100, L4, H100), else fp16 with a ``GradScaler`` (T4, V100, P100: Colab's free T4
  would otherwise get slow emulated bf16); channels_last; ``cudnn.benchmark``; TF32 matmuls.
* CPU: bf16 autocast when the CPU has native bf16 instructions (AVX-512 BF16 or AMX on x86,
  BF16 on ARM), channels_last, and a thread count no larger than the cores we may use.
  Without native bf16 the CPU stays in fp32 (emulated bf16 is slower than fp32).
* MPS (Apple): fp32, channels_last off (no speed-up there).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..errors import ConfigError

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


# ---------------------------------------------------------------------------------------------
# Device


def mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(name: str = "auto") -> torch.device:
    """Pick the device: ``"auto"`` tries cuda, then mps, then cpu; a name forces that device.

    ``"cuda:1"`` style names are accepted. Forcing a device that is absent raises ConfigError.
    Under torchrun, ``"auto"``/``"cuda"`` use the GPU of this process's ``LOCAL_RANK``.
    """
    name = (name or "auto").lower()
    kind = name.split(":")[0]
    if kind not in DEVICES:
        raise ConfigError(f"device {name!r} is not one of {', '.join(DEVICES)} (or 'cuda:N')")
    if kind == "auto":
        if torch.cuda.is_available():
            kind, name = "cuda", "cuda"
        elif mps_available():
            return torch.device("mps")
        else:
            return torch.device("cpu")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {name!r} requested but CUDA is not available; use device='cpu' or 'auto'")
        if name == "cuda":
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        return torch.device(name)
    if kind == "mps" and not mps_available():
        raise ConfigError("device 'mps' requested but MPS is not available; use device='cpu' or 'auto'")
    return torch.device(name)


# ---------------------------------------------------------------------------------------------
# CPU capabilities


def _cpuinfo_flags() -> set[str] | None:
    """The CPU feature flags from /proc/cpuinfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):  # x86 "flags", ARM "Features"
                    return set(value.split())
    except OSError:
        return None
    return None


#: oneDNN instruction-set caps (``ONEDNN_MAX_CPU_ISA``) below AVX512_CORE_BF16, the first with bf16.
_ONEDNN_ISAS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                                       "AVX512_CORE_VNNI"})


def cpu_kernel_cap() -> str | None:
    """The environment variable that keeps torch's CPU kernels below bf16, or None.

    ``ONEDNN_MAX_CPU_ISA=AVX2`` or ``ATEN_CPU_CAPABILITY=avx2`` (the notebook tests set both)
    make a bf16-capable CPU compute bf16 by emulation, several times slower than fp32.
    """
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        value = os.environ.get(name, "").strip().upper()
        if value in _ONEDNN_ISAS_WITHOUT_BF16:
            return f"{name}={value}"
    value = os.environ.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if value in ("default", "avx2"):
        return f"ATEN_CPU_CAPABILITY={value}"
    return None


def cpu_supports_bf16() -> bool:
    """True when the CPU computes bf16 natively (so bf16 autocast is faster than fp32).

    Reads the Linux CPU flags (``avx512_bf16`` / ``amx_bf16`` on x86, ``bf16`` on ARM) where
    available, otherwise asks torch's own CPU capability checks. Never assumes: when neither
    source answers, returns False. False too when an environment variable caps the kernels
    below bf16 (:func:`cpu_kernel_cap`).
    """
    if cpu_kernel_cap() is not None:
        return False
    flags = _cpuinfo_flags()
    if flags is not None and flags:
        return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    checks = [getattr(torch.cpu, n, None) for n in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    for check in checks:
        if check is not None:
            with contextlib.suppress(Exception):
                if check():
                    return True
    return False


def available_cores() -> int:
    """CPU cores this process may use (respects affinity / container limits where visible)."""
    with contextlib.suppress(AttributeError, OSError):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def default_num_workers(device: torch.device | str = "cpu") -> int:
    """DataLoader workers: a GPU wants several decoders; on a CPU every worker steals a core
    from the model, so use at most one (none on a single core)."""
    cores = available_cores()
    if torch.device(device).type == "cuda":
        return max(2, min(8, cores - 1))
    return min(1, cores - 1)


# ---------------------------------------------------------------------------------------------
# Fast path


@dataclass
class FastPath:
    """How training and inference run on ``device``.

    ``autocast_dtype`` is None for plain fp32. ``grad_scaler`` is True for fp16 (its small range
    needs loss scaling); bf16 has fp32's range and needs none.
    """

    device: torch.device  # where tensors live
    autocast_dtype: torch.dtype | None = None  # torch.bfloat16 / torch.float16, or None (fp32)
    channels_last: bool = False  # NHWC memory format for conv nets (faster with oneDNN / cuDNN)
    compile: bool = False  # wrap models in torch.compile (pays off for long runs)
    grad_scaler: bool = False  # fp16 needs a GradScaler
    num_threads: int | None = None  # torch intra-op threads set by apply() (CPU); None = leave as is
    cudnn_benchmark: bool = False  # let cuDNN pick the fastest kernels for fixed input sizes

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    @property
    def precision(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast_dtype]

    def describe(self) -> str:
        """One line for the log, e.g. ``"cpu | bf16 autocast | channels_last | 2 threads"``."""
        parts = [str(self.device), "fp32" if self.autocast_dtype is None else f"{self.precision} autocast"]
        if self.grad_scaler:
            parts.append("GradScaler")
        if self.channels_last:
            parts.append("channels_last")
        if self.cudnn_benchmark:
            parts.append("cudnn.benchmark")
        if self.compile:
            parts.append("torch.compile")
        if self.device.type == "cpu":
            parts.append(f"{self.num_threads or torch.get_num_threads()} threads")
        return " | ".join(parts)

    def apply(self) -> "FastPath":
        """Set the process-wide switches (threads, cuDNN benchmark, TF32). Returns self."""
        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.cudnn_benchmark
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return self

    def to_device(self, images: torch.Tensor) -> torch.Tensor:
        """Move an image batch (B, 3, H, W) to the device in the right memory format. On CUDA a
        CPU batch is pinned first, so that the copy is asynchronous (a DataLoader with
        ``pin_memory`` already did it)."""
        if self.device.type == "cuda" and images.device.type == "cpu" and not images.is_pinned():
            images = images.pin_memory()
        return images.to(self.device, non_blocking=True, memory_format=self.memory_format)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Move ``model`` to the device in the right memory format (compile separately: see
        :func:`maybe_compile`, it must come after DistributedDataParallel)."""
        return model.to(self.device, memory_format=self.memory_format)


def fast_path(
    device: torch.device | str,
    precision: str = "auto",
    compile: bool = False,
    num_threads: int | None = None,
) -> FastPath:
    """Choose the fast path for ``device``.

    ``precision``: ``"auto"`` (the fastest safe choice, see the module docstring), ``"fp32"``
    (plain: no autocast, no channels_last, no compile), ``"bf16"`` or ``"fp16"`` (forced).
    ``num_threads`` (CPU): None -> the cores available to this process, capped at torch's own
    default.
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return FastPath(device=device, num_threads=_threads(device, num_threads))
    if device.type == "cuda":
        bf16_ok = cuda_supports_bf16(device)
        if precision == "bf16" and not bf16_ok:
            raise ConfigError(f"precision 'bf16' is not supported by {torch.cuda.get_device_name(device)}; use 'fp16' or 'auto'")
        dtype = torch.float16 if precision == "fp16" or not bf16_ok else torch.bfloat16
        return FastPath(
            device=device,
            autocast_dtype=dtype,
            channels_last=True,
            compile=compile,
            grad_scaler=dtype == torch.float16,
            cudnn_benchmark=True,
        )
    if device.type == "cpu":
        if precision == "fp16":
            raise ConfigError("precision 'fp16' needs a CUDA GPU; on the CPU use 'bf16', 'fp32' or 'auto'")
        use_bf16 = precision == "bf16" or cpu_supports_bf16()
        return FastPath(
            device=device,
            autocast_dtype=torch.bfloat16 if use_bf16 else None,
            channels_last=True,
            compile=compile,
            num_threads=_threads(device, num_threads),
        )
    # mps and anything else: plain fp32 unless forced
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return FastPath(device=device, autocast_dtype=dtype, compile=compile)


def cuda_supports_bf16(device: torch.device | str = "cuda") -> bool:
    """True when the GPU computes bf16 natively: compute capability 8.0 or later (Ampere and
    newer). ``torch.cuda.is_bf16_supported()`` alone also answers True for GPUs that only
    emulate bf16 (a T4, capability 7.5), which is slower than fp16 there."""
    major, _ = torch.cuda.get_device_capability(device)
    if major < 8:
        return False
    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no including_emulation (and no emulation either)
        return bool(torch.cuda.is_bf16_supported())


def describe_precision(device: torch.device | str | None = None) -> str:
    """One line on the precision training will use on ``device`` (default: the automatic one),
    and why, for the notebooks' versions cell and the CLI."""
    device = select_device("auto") if device is None else torch.device(device)
    fp = fast_path(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        why = (f"compute capability {major}.{minor}: "
               + ("native bf16" if fp.precision == "bf16" else "no native bf16, so fp16 with a GradScaler"))
    elif device.type == "cpu":
        cap = cpu_kernel_cap()
        why = ("native bf16 in the CPU flags" if fp.precision == "bf16"
               else f"{cap} caps the kernels below bf16" if cap
               else "no native bf16 on this CPU (bf16 would be emulated)")
    else:
        why = "fp32 on this device"
    return f"{fp.precision} ({why})"


def _threads(device: torch.device, num_threads: int | None) -> int | None:
    if device.type != "cpu":
        return None
    if num_threads:
        return int(num_threads)
    return max(1, min(torch.get_num_threads(), available_cores()))


def autocast(fp: FastPath):
    """Autocast context for ``fp`` (a no-op context for fp32)."""
    if fp.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=fp.device.type, dtype=fp.autocast_dtype)


def make_grad_scaler(fp: FastPath) -> torch.amp.GradScaler | None:
    """A GradScaler when ``fp`` needs one (fp16), else None."""
    if not fp.grad_scaler:
        return None
    return torch.amp.GradScaler(fp.device.type)


def maybe_compile(model: nn.Module, fp: FastPath) -> nn.Module:
    """``torch.compile(model)`` when ``fp.compile``; the model otherwise."""
    return torch.compile(model) if fp.compile else model


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):  # torch.compile
            model = model._orig_mod
        elif isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        else:
            return model


# ---------------------------------------------------------------------------------------------
# Distributed (torchrun) helpers


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_info() -> DistInfo:
    """Read torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return DistInfo(
            torch.distributed.get_rank(), torch.distributed.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))
        )
    return DistInfo(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )


@contextlib.contextmanager
def distributed_session(device: torch.device) -> Iterator[DistInfo]:
    """Initialise the process group under torchrun (nccl on CUDA, gloo otherwise) and tear it
    down at the end, unless the caller already initialised it. Yields :class:`DistInfo`."""
    info = dist_info()
    owned = False
    if info.distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend)
        owned = True
        info = dist_info()
    try:
        yield info
    finally:
        if owned:
            torch.distributed.destroy_process_group()


def broadcast_from_main(value, info: DistInfo):
    """Rank 0's ``value`` (any picklable) on every rank: all ranks plan the same epochs and stop
    at the same one."""
    if not info.distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def barrier(info: DistInfo) -> None:
    if info.distributed:
        torch.distributed.barrier()

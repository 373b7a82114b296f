"""Benchmarks: the fast paths against the plain way of writing the same code, as ratios.

``python -m reid_utils bench [--json] [--quick] [--only SECTION ...]`` calls
:func:`run_benchmarks`. The two sides of a comparison run in one process, interleaved (fast,
plain, plain, fast, ...) after untimed warm-up rounds, and the medians are reported: a machine
that gets busier halfway through slows both sides alike. Sections:

* ``train`` (:mod:`.model_speed`): training images per second (forward + backward + AdamW
  step) of APR-Net (ResNet-50, from scratch) on one fixed PK batch, fast path
  (:func:`~reid_utils.engine.runtime.fast_path`: bf16 autocast + channels_last on a CPU with native
  bf16; autocast + channels_last + cudnn.benchmark on CUDA) against plain fp32, per input size;
* ``infer`` (:mod:`.model_speed`): eval-mode images per second through
  :func:`~reid_utils.engine.inference.forward_batch`, same two sides, plus ``torch.compile`` on the
  fast side at the first size (full run only; compile time reported apart);
* ``eval`` (:mod:`.ranking`): seconds of :func:`~reid_utils.metrics.evaluate_reid` against the
  per-query NumPy loop on a Market-sized problem, and their largest CMC / mAP / mINP difference;
* ``rerank`` (:mod:`.ranking`): seconds and peak memory of :func:`~reid_utils.metrics.rerank.re_ranking`
  at Market size, in a child process (its ``ru_maxrss`` minus its own baseline, so this
  process is unaffected), and its largest difference from the step-by-step reference;
* ``loader`` (:mod:`.loader`): images per second out of a DataLoader (cached
  :class:`~reid_utils.data.ReidDataset`, train transforms, :class:`~reid_utils.data.PKSampler`)
  and out of the on-tensor batch augmentation, next to the fast training speed;
* ``contention`` (:mod:`.contention`): seconds per training step next to a busy process started
  in another session, with the thread governor and with fixed threads, against alone;
* ``trunks`` (:mod:`.model_speed`): training images per second of ``osnet`` against the CPU
  recipe's ResNet-18 ``apr``, with each one's FLOPs per image;
* ``recipe`` (:mod:`.recipe`): the CPU recipe's training step (ResNet-18 ``apr``, 128x64, batch
  64, fast path) against half and twice its batch, the other memory format and, in the full
  run, ``torch.compile`` of the step (compile time reported apart).

Nothing here asserts a timing: :data:`TARGETS` (the 2-core CPU goals) are printed next to the
numbers. See ``benchmarks/README.md`` for the table format and a recorded run.
"""
from .ranking import market_like_problem
from .report import TARGETS, format_report, machine_info
from .suite import FULL, HEADLINE_KEYS, QUICK, SECTIONS, BenchSettings, run_benchmarks
from .timing import interleaved

__all__ = [
    "BenchSettings",
    "FULL",
    "HEADLINE_KEYS",
    "QUICK",
    "SECTIONS",
    "TARGETS",
    "format_report",
    "interleaved",
    "machine_info",
    "market_like_problem",
    "run_benchmarks",
]

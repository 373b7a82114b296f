"""Shared pytest fixtures.

* ``repo_root``: the repository root.
* ``shared_data`` / ``course_data`` / ``market_attribute_mat``: the real data in the repository's
  sibling ``shared/data`` folder; tests using them skip cleanly when it is absent.
* ``tiny_course_root`` / ``tiny_market_root``: small synthetic datasets written once per test
  session (fast: about 200 64x128 JPEG files each); ``tiny_sizes`` holds their sizes.
* hypothesis is repeatable: the same examples every run (profile ``repeatable``), so CI
  never fails on a draw it cannot reproduce; ``HYPOTHESIS_PROFILE=explore`` draws new ones.
* torch runs with 2 threads at most (the development machine is shared); ``one_thread``
  drops to one for modules of tiny models.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("repeatable", derandomize=True, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

#: Sizes of the tiny synthetic datasets (tests may rely on them).
TINY_NUM_IDS = 16
TINY_IMAGES_PER_ID = 6


@pytest.fixture(scope="session", autouse=True)
def _few_torch_threads():
    """Keep torch to 2 threads for the whole session (shared 2-core machines, CI)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


@pytest.fixture
def one_thread():
    """One torch thread for a test (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    models and batches gain nothing from a second thread, and on a shared machine the idle
    thread's spin-waiting costs more than it saves."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``<repo>/../shared/data``; skips the test when absent (a user's fresh clone)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def course_data(shared_data: Path) -> Path:
    """The real course release (``market1501_course``); skips when absent."""
    root = shared_data / "market1501_course"
    if not (root / "annotations_train.csv").is_file():
        pytest.skip(f"course data {root} not available")
    return root


@pytest.fixture(scope="session")
def market_attribute_mat(shared_data: Path) -> Path:
    """The real ``market_attribute.mat``; skips when absent."""
    path = shared_data / "market1501_attribute" / "market_attribute.mat"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture(scope="session")
def tiny_sizes() -> dict[str, int]:
    """Sizes of ``tiny_course_root`` / ``tiny_market_root`` (write_sample's defaults for the rest)."""
    num_test_ids = max(2, 2 * TINY_NUM_IDS // 3)
    return {
        "num_ids": TINY_NUM_IDS,
        "images_per_id": TINY_IMAGES_PER_ID,
        "num_test_ids": num_test_ids,
        "num_queries": 2 * num_test_ids,
        "num_distractors": num_test_ids,
        "num_junk": num_test_ids // 2,
    }


@pytest.fixture(scope="session")
def tiny_course_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the course layout (16 train ids x 6 images, 10 test ids).

    Also holds ``ground_truth.csv`` for its anonymous ``test/`` and ``queries/`` images.
    Session-scoped: treat it as read-only (copy it before corrupting files).
    """
    from reid_utils.synthetic.generator import write_sample

    return write_sample(
        tmp_path_factory.mktemp("tiny_course") / "sample",
        num_ids=TINY_NUM_IDS,
        seed=0,
        layout="course",
        images_per_id=TINY_IMAGES_PER_ID,
    )


@pytest.fixture(scope="session")
def tiny_market_root(tmp_path_factory) -> Path:
    """A small synthetic dataset in the official Market-1501 layout, with ``market_attribute.mat``.

    ``bounding_box_test/`` includes junk (``-1_...``) and distractor (``0000_...``) images.
    Session-scoped: treat it as read-only.
    """
    from reid_utils.synthetic.generator import write_sample

    return write_sample(
        tmp_path_factory.mktemp("tiny_market") / "market",
        num_ids=TINY_NUM_IDS,
        seed=0,
        layout="market",
        images_per_id=TINY_IMAGES_PER_ID,
    )

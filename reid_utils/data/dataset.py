"""Image reading and the PyTorch Dataset over :class:`~reid_utils.data.layouts.Record` s.

``ReidDataset(records, transform)[i]`` is a dict::

    {"image": FloatTensor (3, H, W),   # transform(image); plain [0, 1] floats without a transform
     "pid": int,                       # pid_to_label[record.pid] if a mapping is given, else record.pid
     "camid": int,                     # 0-based, -1 unknown
     "attributes": LongTensor (12,),   # groups form, -1 where unknown
     "path": str,
     "index": int}                     # i (the training loop's distillation targets are rows)

The default collate turns a batch into ``image (B, 3, H, W)``, ``pid (B,)`` int64,
``camid (B,)`` int64, ``attributes (B, 12)`` int64, a list of paths and ``index (B,)`` int64.

Optional cache (``cache=True``): decoded images are kept as one ``uint8`` tensor
``(N, 3, H, W)``, resized once to ``image_size`` (default: the first image's size, e.g.
128x64 for the course data, 3 x 128 x 64 bytes = 24 KiB per image, 250 MB for its 10k train
images; 4x that at 256x128). Cached images reach the transform as ``uint8`` tensors, which
torchvision ``v2`` transforms (and :func:`~reid_utils.data.transforms.build_transforms`)
accept like PIL images. Each DataLoader worker fills its own copy of a lazily filled cache;
call :meth:`ReidDataset.preload` before building the loader to decode everything once in the
main process, which forked workers then share.
"""
from __future__ import annotations

import hashlib
import os
from collections import Counter
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

if TYPE_CHECKING:
    from .layouts import DatasetIndex, Record


#: Image formats decoded, whatever the file's extension says (a PNG named .jpg is fine; a GIF,
#: TIFF or anything else is refused rather than decoded by a rarely used decoder).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "MPO")
#: Person crops are small; anything larger is refused before it is decoded (64x128 in Market).
MAX_PIXELS = 4096 * 4096
#: Modes holding 16 (or 32) bits per pixel: grayscale PNGs with 16-bit samples.
_HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def open_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` fully (any mode); a missing, corrupt, truncated, oversized or unsupported
    file raises DataError."""
    try:
        image = Image.open(path, formats=IMAGE_FORMATS)
        if image.width * image.height > MAX_PIXELS:
            raise DataError(f"{path}: image is {image.width}x{image.height} pixels, expected a person crop of at most "
                            f"{MAX_PIXELS:,} pixels")
        image.load()  # decodes now, so truncation is detected here and not in a worker later
    except FileNotFoundError:
        raise DataError(f"{path}: image file is missing") from None
    except DataError:
        raise
    except Exception as error:  # noqa: BLE001 - decoders raise many types for a damaged file
        reason = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise DataError(f"{path}: cannot decode image ({reason}); the file is corrupt, truncated or not a "
                        f"{'/'.join(IMAGE_FORMATS[:3])} image") from None
    return image


def to_rgb(image: Image.Image, path: str | os.PathLike = "image") -> Image.Image:
    """``image`` as 8-bit RGB. Grayscale, palette, RGBA and CMYK are converted as Pillow does;
    16-bit grayscale is scaled to 8 bits (``v * 255 / 65535``: Pillow's own conversion would clip
    it to white); floating-point and other modes raise DataError naming ``path``."""
    if image.mode == "RGB":
        return image
    if image.mode in _HIGH_DEPTH_MODES:
        values = np.asarray(image).astype(np.int64)  # (H, W)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"{path}: {image.mode} image with values {values.min()}-{values.max()}, expected 8 or 16 "
                            "bits per sample (0-65535)")
        gray = ((values * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if image.mode == "F":
        raise DataError(f"{path}: floating-point image (mode F), expected 8 or 16 bits per sample")
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as error:
        raise DataError(f"{path}: cannot convert image mode {image.mode!r} to RGB ({error})") from None


def read_image(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` as an 8-bit RGB PIL image (see :func:`to_rgb` for other modes)."""
    return to_rgb(open_image(path), path)


def validate_images(index: DatasetIndex, progress: bool = False) -> dict:
    """Decode every image of ``index``; raise :class:`DataError` naming the corrupt ones.

    Returns ``{"images_checked": int, "image_modes": {"RGB": n, "L": n, ...},
    "image_sizes": {"64x128": n, ...}, "queries_in_test": int}`` (sizes as width x height).
    Grayscale / RGBA / palette / 16-bit grayscale images are fine: the Dataset converts them to
    RGB (:func:`to_rgb`). ``queries_in_test`` counts the query images with a pixel-identical
    copy among the test images (the course release has one for every query: each ranking then
    starts with the query's own copy, and the course evaluator counts it as a match).
    """
    records = [(record, role) for role, part in (("", index.train), ("test", index.test), ("query", index.query))
               for record in part]
    if progress:
        from tqdm.auto import tqdm

        records = tqdm(records, desc="checking images", unit="img")
    modes, sizes, corrupt = Counter(), Counter(), []
    test_digests, query_digests = set(), []  # pixels (and size) of every test and query image
    for record, role in records:
        try:
            image = open_image(record.path)
        except DataError as error:
            corrupt.append(str(error))
            continue
        try:
            rgb = to_rgb(image, record.path)  # what the Dataset will do: a mode it cannot convert is an error now
        except DataError as error:
            corrupt.append(str(error))
            continue
        modes[image.mode] += 1
        sizes[f"{image.width}x{image.height}"] += 1
        if role:
            digest = hashlib.blake2b(f"{rgb.size}".encode() + rgb.tobytes(), digest_size=16).digest()
            if role == "test":
                test_digests.add(digest)
            else:
                query_digests.append(digest)
        image.close()
    if corrupt:
        more = f" ({len(corrupt) - 1} more corrupt images)" if len(corrupt) > 1 else ""
        raise DataError(corrupt[0] + more)
    return {"images_checked": sum(modes.values()), "image_modes": dict(modes), "image_sizes": dict(sizes),
            "queries_in_test": sum(digest in test_digests for digest in query_digests)}


def image_to_uint8(image: Image.Image, image_size: tuple[int, int] | None = None) -> torch.Tensor:
    """RGB PIL image -> ``uint8`` tensor ``(3, H, W)``, resized (bilinear) to ``image_size=(H, W)`` if given."""
    if image_size is not None and (image.height, image.width) != tuple(image_size):
        image = image.resize((image_size[1], image_size[0]), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def load_image_tensor(
    records: Sequence[Record], image_size: tuple[int, int] | None = None, progress: bool = False
) -> torch.Tensor:
    """Decode ``records`` into one ``uint8`` tensor ``(N, 3, H, W)``.

    ``image_size=(H, W)``; default: the first image's size. Useful for batched on-tensor
    augmentation (:func:`~reid_utils.data.transforms.batch_augment`).
    """
    dataset = ReidDataset(records, cache=True, image_size=image_size)
    dataset.preload(progress=progress)
    return dataset.cache_tensor


class ReidDataset(torch.utils.data.Dataset):
    """Images of ``records`` with their identity, camera and attribute labels.

    Args:
        records: the images (``Split.train``, ``Split.val_query``, ``DatasetIndex.test`` ...).
        transform: ``callable(PIL image or uint8 tensor (3, H, W)) -> FloatTensor (3, H, W)``,
            e.g. ``build_transforms(256, 128, train=True)``. ``None``: floats in [0, 1].
        pid_to_label: maps original person ids to contiguous training labels
            (``Split.pid_to_label``); a record whose pid is not in it raises ``KeyError``.
            ``None``: the original pid is returned.
        cache: keep decoded images in memory (see the module docstring).
        image_size: ``(H, W)`` of cached images; default: the first image's size.
    """

    def __init__(
        self,
        records: Sequence[Record],
        transform: Callable | None = None,
        pid_to_label: dict[int, int] | None = None,
        cache: bool = False,
        image_size: tuple[int, int] | None = None,
    ):
        self.records = list(records)
        self.transform = transform
        self.pid_to_label = pid_to_label
        self.cache = cache
        self.image_size = tuple(image_size) if image_size is not None else None
        if pid_to_label is not None:
            unknown = sorted({r.pid for r in self.records} - set(pid_to_label))
            if unknown:
                raise KeyError(f"person id(s) {unknown[:5]} are not in pid_to_label ({len(unknown)} in all)")
        self.cache_tensor: torch.Tensor | None = None  # uint8 (N, 3, H, W) when cache=True
        self._filled = np.zeros(len(self.records), dtype=bool)
        if cache and self.records:
            if self.image_size is None:
                first = read_image(self.records[0].path)
                self.image_size = (first.height, first.width)
            self.cache_tensor = torch.empty((len(self.records), 3, *self.image_size), dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.records)

    @property
    def labels(self) -> list[int]:
        """Label of every item (what ``__getitem__`` returns as ``pid``), e.g. for :class:`PKSampler`."""
        if self.pid_to_label is None:
            return [r.pid for r in self.records]
        return [self.pid_to_label[r.pid] for r in self.records]

    def _cached(self, i: int) -> torch.Tensor:
        if not self._filled[i]:
            self.cache_tensor[i] = image_to_uint8(read_image(self.records[i].path), self.image_size)
            self._filled[i] = True
        return self.cache_tensor[i]

    def preload(self, progress: bool = False) -> None:
        """Decode every image into the cache now (``cache=True`` only)."""
        if not self.cache:
            raise RuntimeError("preload() needs ReidDataset(..., cache=True)")
        indices = range(len(self))
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc="decoding images", unit="img")
        for i in indices:
            self._cached(i)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        image = self._cached(i) if self.cache else read_image(record.path)
        if self.transform is not None:
            tensor = self.transform(image)
        elif self.cache:
            tensor = image.float().div(255)
        else:
            tensor = image_to_uint8(image).float().div(255)
        pid = self.pid_to_label[record.pid] if self.pid_to_label is not None else record.pid
        return {
            "image": tensor,
            "pid": int(pid),
            "camid": int(record.camid),
            "attributes": torch.tensor(record.attributes, dtype=torch.int64),
            "path": str(record.path),
            "index": i,
        }

"""Data layer: attribute schema, file-name parsing, dataset layouts, Dataset, split, sampler, transforms.

Typical use::

    from reid_utils.data import resolve_data_root, load_dataset, make_split, ReidDataset, PKSampler, build_transforms

    index = load_dataset(resolve_data_root())          # REID_DATA_ROOT or the bundled sample
    split = make_split(index, val_fraction=0.2, seed=0)
    train_set = ReidDataset(split.train, build_transforms(256, 128, train=True), split.pid_to_label)
    sampler = PKSampler(train_set.labels, p=16, k=4, seed=0)
"""
from .annotations import read_course_annotations, read_market_attributes
from .dataset import ReidDataset, image_to_uint8, load_image_tensor, open_image, read_image, to_rgb, validate_images
from .inspect import format_summary, summarize
from .layouts import DatasetIndex, Record, detect_layout, load_dataset, unknown_attributes
from .locate import ENV_VAR, extract_zip, resolve_data_root
from .parsing import (
    DISTRACTOR_PID,
    JUNK_PID,
    UNKNOWN_CAMID,
    UNKNOWN_PID,
    MarketName,
    is_image_file,
    parse_anonymous_name,
    parse_course_train_name,
    parse_market_name,
)
from .sampler import PKSampler
from .split import Split, load_split, make_split, query_gallery, save_split
from .transforms import IMAGENET_MEAN, IMAGENET_STD, batch_augment, build_transforms, normalize_batch

__all__ = [
    "DISTRACTOR_PID",
    "ENV_VAR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "JUNK_PID",
    "UNKNOWN_CAMID",
    "UNKNOWN_PID",
    "DatasetIndex",
    "MarketName",
    "PKSampler",
    "Record",
    "ReidDataset",
    "Split",
    "batch_augment",
    "build_transforms",
    "detect_layout",
    "extract_zip",
    "format_summary",
    "image_to_uint8",
    "is_image_file",
    "load_dataset",
    "load_image_tensor",
    "load_split",
    "make_split",
    "normalize_batch",
    "open_image",
    "parse_anonymous_name",
    "parse_course_train_name",
    "parse_market_name",
    "query_gallery",
    "read_course_annotations",
    "read_image",
    "read_market_attributes",
    "resolve_data_root",
    "save_split",
    "summarize",
    "to_rgb",
    "unknown_attributes",
    "validate_images",
]

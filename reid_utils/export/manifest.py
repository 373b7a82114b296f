"""``submission.json``: which checkpoints made a submission, with which settings, and the
digests that tie its two files together.

::

    {"format": "reid_utils.submission/1", "created": "2025-01-31T12:00:00Z",
     "files": {"classification_test.csv": {"sha256": ..., "bytes": ...}, "reid_test.txt": {...}},
     "checkpoints": {"reid": {"path", "sha256", "tensor_digest", "model", "epoch"},
                     "attribute": {...}},            # the same entry twice for a one-model export
     "settings": {"top_k", "rerank", "rerank_choice", "flip", "metric", "threshold"},
     "dataset": ..., ...}                            # rerank_choice: how rerank="auto" decided

:func:`check_submission` re-hashes the two files and raises when either differs from the
manifest, e.g. when one of them was copied in by hand from another export.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Mapping

from ..errors import ExportError

MANIFEST_FILE = "submission.json"
MANIFEST_FORMAT = "reid_utils.submission/1"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_entry(path: str | os.PathLike, ckpt: Mapping) -> dict:
    """What the manifest says about one checkpoint: where it was, its file and tensor digests,
    the model name and the epoch."""
    stored = ckpt.get("digest")
    return {
        "path": str(Path(path).resolve()),
        "sha256": file_sha256(path),
        "tensor_digest": stored.get("value") if isinstance(stored, dict) else None,
        "model": ckpt.get("model_name", (ckpt.get("config") or {}).get("model")),
        "epoch": ckpt.get("epoch"),
    }


def build_manifest(files: Mapping[str, bytes], checkpoints: Mapping[str, dict], settings: Mapping, **extra) -> dict:
    """The manifest dict for ``files`` (name -> content) made by ``checkpoints`` (role -> entry)."""
    return {
        "format": MANIFEST_FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "files": {name: {"sha256": sha256_bytes(data), "bytes": len(data)} for name, data in files.items()},
        "checkpoints": dict(checkpoints),
        "settings": dict(settings),
        **extra,
    }


def manifest_bytes(manifest: Mapping) -> bytes:
    return (json.dumps(manifest, indent=1, sort_keys=False) + "\n").encode("utf-8")


def read_manifest(out_dir: str | os.PathLike) -> dict:
    """``out_dir/submission.json`` as a dict; ExportError when missing or malformed."""
    path = Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        raise ExportError(f"{path}: manifest is missing (a submission written by export_submission has one)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ExportError(f"{path}: not a valid JSON manifest ({error})") from None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT or not isinstance(files, dict) or not all(
            isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()):
        raise ExportError(f"{path}: not a submission manifest (expected \"format\": \"{MANIFEST_FORMAT}\" and files)")
    return data


def check_submission(out_dir: str | os.PathLike) -> dict:
    """Check that the files in ``out_dir`` are the ones its manifest lists; returns the manifest.

    Raises ExportError naming the first file that is missing or differs (the pair is then not
    from one export).
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    for name, entry in manifest["files"].items():
        if Path(name).name != name:
            raise ExportError(f"{out_dir / MANIFEST_FILE}: lists {name!r}, expected a plain file name")
        path = out_dir / name
        if not path.is_file():
            raise ExportError(f"{path}: listed in {MANIFEST_FILE} but missing")
        if file_sha256(path) != entry["sha256"]:
            raise ExportError(f"{path}: differs from the file {MANIFEST_FILE} lists; the files are not from one export")
    return manifest

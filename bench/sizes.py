"""Zip sizes, zipped and unzipped, and what takes the most room in each."""

from __future__ import annotations

import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ZipSize", "measure_zip"]

TOP_CONTRIBUTORS = 6


@dataclass(frozen=True)
class ZipSize:
    """Bytes of one zip; `largest` maps top-level entries to their compressed bytes."""

    zipped: int
    unzipped: int
    largest: dict[str, int]


def measure_zip(zip_path: Path) -> ZipSize:
    """Sizes of a zip and its largest top-level packages, by compressed size."""
    compressed: Counter[str] = Counter()
    unzipped = 0
    with zipfile.ZipFile(zip_path) as archive:
        for info in archive.infolist():
            compressed[info.filename.split("/", 1)[0]] += info.compress_size
            unzipped += info.file_size
    return ZipSize(
        zipped=zip_path.stat().st_size,
        unzipped=unzipped,
        largest=dict(compressed.most_common(TOP_CONTRIBUTORS)),
    )

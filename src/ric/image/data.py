"""Reading (image, caption) rows for `ric image label`, and held-out captions for the sweep.

Rows come from a folder of images with a captions file, a JSONL/Parquet/CSV table of image
paths and captions, or a Hugging Face dataset. Everything that can be checked cheaply (columns,
captions, that every image file exists) is checked before the first image is decoded, so a bad
row fails the command at once rather than hours into labeling; images are decoded one at a
time, when asked for, so a large set never has to fit in memory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
from PIL import Image, ImageOps

from ric.config import DataConfig, require_setting
from ric.data.sources import (
    SUFFIX_FORMATS,
    check_columns,
    is_saved_dataset,
    load_hf_dataset,
    read_prompts,
    read_table,
    resolve_format,
)
from ric.image.config import ImageDataConfig

if TYPE_CHECKING:
    import datasets

# What the folder format looks for when data.captions_file is empty, in this order.
CAPTION_FILES = ("metadata.jsonl", "captions.jsonl", "captions.csv")
# The column naming each image in a folder's captions file (Hugging Face imagefolder's name).
FOLDER_IMAGE_COLUMN = "file_name"
HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")


class ImageRows:
    """(image, caption) rows whose images are decoded only when asked for, from files or from
    an image column of a Hugging Face dataset (exactly one of ``files`` and ``dataset``).
    Captions are checked here, so no row with an empty caption reaches a reward model."""

    def __init__(
        self,
        captions: Sequence[object],
        files: Sequence[Path] | None = None,
        dataset: datasets.Dataset | None = None,
        image_column: str = "image",
    ) -> None:
        if (files is None) == (dataset is None):
            raise ValueError("ImageRows takes either files or a dataset, not both or neither")
        self._files = None if files is None else list(files)
        self._dataset = dataset
        self._image_column = image_column
        self._count = len(files) if files is not None else len(dataset or ())
        if self._count != len(captions):
            raise ValueError(f"{len(captions)} captions for {self._count} images")
        self.captions: list[str] = _checked_captions(captions, self.describe)

    def __len__(self) -> int:
        return self._count

    def _row(self, index: int) -> int:
        """``index`` as a row number; IndexError and negative indices as for a list."""
        return range(self._count)[index]

    def image(self, index: int) -> Image.Image:
        """Row ``index``'s image in RGB, turned upright by its EXIF orientation the way
        ``datasets`` decodes images, so every source gives the same pixels."""
        row = self._row(index)
        if self._files is not None:
            path = self._files[row]
            try:
                with Image.open(path) as image:
                    return ImageOps.exif_transpose(image).convert("RGB")
            except OSError as error:  # PIL's UnidentifiedImageError and truncated files too
                raise ValueError(
                    f"cannot read image file {str(path)!r} (row {row}): {error}"
                ) from error
        assert self._dataset is not None
        try:
            image = self._dataset[row][self._image_column]
        except (OSError, ValueError) as error:  # undecodable bytes, or a missing image file
            raise ValueError(f"cannot read the image of {self.describe(row)}: {error}") from error
        if not isinstance(image, Image.Image):
            raise ValueError(f"{self.describe(row)} holds no image ({self._image_column!r})")
        return image.convert("RGB")

    def describe(self, index: int) -> str:
        """Where row ``index`` comes from: its image file, or its row in the dataset."""
        row = self._row(index)
        if self._files is not None:
            return str(self._files[row])
        return f"dataset row {row}"


def _checked_captions(captions: Sequence[object], describe: Callable[[int], str]) -> list[str]:
    """``captions`` as strings; a ValueError names the first row whose caption is not text or
    is blank (a reward for an image against no caption means nothing)."""
    checked = []
    for row, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise ValueError(
                f"the caption of row {row} ({describe(row)}) must be text, got {caption!r}"
            )
        if not caption.strip():
            raise ValueError(f"the caption of row {row} ({describe(row)}) is empty")
        checked.append(caption)
    return checked


def resolve_image_format(config: ImageDataConfig) -> str:
    """The format to read ``config.path`` with: explicit; a saved dataset folder or another
    folder; from a file's suffix; else a Hub dataset name."""
    if config.format != "auto":
        return config.format
    path = Path(config.path)
    if path.is_dir():
        return "hf" if is_saved_dataset(path) else "folder"
    if path.exists() or path.suffix.lower() in SUFFIX_FORMATS:
        return resolve_format(DataConfig(path=config.path))
    return "hf"


def _rows_from_frame(
    frame: pd.DataFrame, image_column: str, caption_column: str, base: Path, source: str
) -> ImageRows:
    """Rows naming their image by a path relative to ``base``; every path is checked to exist
    up front, the one cheap check that saves a late crash."""
    check_columns(frame.columns, [image_column, caption_column], source)
    files = []
    for row, name in enumerate(frame[image_column]):
        if not isinstance(name, str) or not name:
            raise ValueError(
                f"column {image_column!r} of {source!r} must hold image file paths; "
                f"row {row} holds {name!r}"
            )
        files.append(base / name)  # an absolute name stays as it is
    missing = [row for row, file in enumerate(files) if not file.exists()]
    if missing:
        raise FileNotFoundError(
            f"image file {str(files[missing[0]])!r} of row {missing[0]} in {source!r} does not "
            f"exist ({len(missing)} missing in all)"
        )
    return ImageRows(frame[caption_column].tolist(), files=files)


def _read_folder(config: ImageDataConfig) -> ImageRows:
    folder = Path(config.path)
    if not folder.is_dir():
        raise ValueError(f"data.format is folder but {config.path!r} is not a folder")
    names = [config.captions_file] if config.captions_file else list(CAPTION_FILES)
    captions_file = next((folder / name for name in names if (folder / name).is_file()), None)
    if captions_file is None:
        raise FileNotFoundError(
            f"no captions file in folder {config.path!r}; tried {', '.join(names)} "
            "(set data.captions_file to the file naming each image's caption)"
        )
    frame = read_table(DataConfig(path=str(captions_file), limit=config.limit))
    return _rows_from_frame(
        frame, FOLDER_IMAGE_COLUMN, config.caption_column, folder, str(captions_file)
    )


def _read_file(config: ImageDataConfig, data_format: str) -> ImageRows:
    frame = read_table(DataConfig(path=config.path, format=data_format, limit=config.limit))
    base = Path(config.path).parent
    return _rows_from_frame(frame, config.image_column, config.caption_column, base, config.path)


def _read_hf(config: ImageDataConfig) -> ImageRows:
    """An image column of ``datasets.Image`` values stays in the (memory-mapped) dataset and is
    decoded per row; a column of paths (relative to the current folder) is read as files."""
    import datasets  # heavy import, only for this source

    dataset = load_hf_dataset(config.path, config.split)
    check_columns(dataset.column_names, [config.image_column, config.caption_column], config.path)
    if config.limit is not None:
        dataset = dataset.select(range(min(config.limit, len(dataset))))
    feature = dataset.features[config.image_column]
    if isinstance(feature, datasets.Image):
        return ImageRows(
            list(dataset[config.caption_column]),
            dataset=dataset.select_columns([config.image_column]),
            image_column=config.image_column,
        )
    if feature == datasets.Value("string"):
        frame = dataset.select_columns([config.image_column, config.caption_column]).to_pandas()
        return _rows_from_frame(
            frame, config.image_column, config.caption_column, Path(), config.path
        )
    raise ValueError(
        f"column {config.image_column!r} of {config.path!r} must hold images (datasets.Image) "
        f"or image file paths; it holds {feature}"
    )


def read_image_rows(config: ImageDataConfig) -> ImageRows:
    """The (image, caption) rows ``config`` names (its first ``limit``), every caption and
    image path checked; images are decoded later, by ``ImageRows.image``."""
    require_setting("data.path", config.path, "input data", flag="data")
    data_format = resolve_image_format(config)
    if not Path(config.path).exists() and not (
        data_format == "hf" and HUB_NAME.fullmatch(config.path)
    ):
        hint = " and is not a Hub dataset name (owner/name)" if data_format == "hf" else ""
        raise FileNotFoundError(f"data.path {config.path!r} does not exist{hint}")
    if data_format == "folder":
        rows = _read_folder(config)
    elif data_format == "hf":
        rows = _read_hf(config)
    else:
        rows = _read_file(config, data_format)
    if len(rows) == 0:
        raise ValueError(f"input {config.path!r} holds no (image, caption) rows")
    return rows


def read_captions(path: str, column: str, limit: int | None) -> list[str]:
    """Held-out captions (the first ``limit``): ``column`` of a JSONL, Parquet or CSV file or
    a HF dataset, as prompts are read for text, or the lines of a .txt file (blank lines are
    no captions and are skipped; ``column`` is not used)."""
    file = Path(path)
    if file.suffix.lower() != ".txt":
        return read_prompts(path, column, limit)
    if not file.is_file():
        raise FileNotFoundError(f"captions file {path!r} does not exist")
    captions = [line.strip() for line in file.read_text(encoding="utf-8").splitlines()]
    captions = [caption for caption in captions if caption]
    if not captions:
        raise ValueError(f"captions file {path!r} holds no captions")
    return captions[:limit]

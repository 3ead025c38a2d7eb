"""Reading (image, caption) rows for `ric image label` and held-out captions: every format
reads back the same captions and pixels, and every bad input fails up front with an error that
names the bad value."""

import json
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ric.image.config import ImageDataConfig
from ric.image.data import ImageRows, read_captions, read_image_rows, resolve_image_format

CAPTIONS = ["a red square", "a green square", "a blue square"]
COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def make_images(folder: Path) -> list[str]:
    """Three 4x3 one-color PNGs in ``folder``; their file names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, color in enumerate(COLORS):
        name = f"img{index}.png"
        Image.new("RGB", (4, 3), color).save(folder / name)
        names.append(name)
    return names


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def write_table(path: Path, frame: pd.DataFrame) -> None:
    """``frame`` as the JSONL, Parquet or CSV file its suffix names."""
    if path.suffix == ".jsonl":
        write_jsonl(path, frame.to_dict("records"))
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)


def assert_rows(rows: ImageRows, count: int = 3) -> None:
    assert len(rows) == count
    assert rows.captions == CAPTIONS[:count]
    for index in range(count):
        image = rows.image(index)
        assert image.mode == "RGB" and image.size == (4, 3)
        assert (np.asarray(image) == COLORS[index]).all()


def table_records(names: list[str]) -> list[dict]:
    return [
        {"image": name, "caption": caption} for name, caption in zip(names, CAPTIONS, strict=True)
    ]


@pytest.mark.parametrize("captions_file", ["metadata.jsonl", "captions.jsonl", "captions.csv"])
def test_folder_finds_each_captions_file(tmp_path, captions_file):
    names = make_images(tmp_path / "images")
    write_table(
        tmp_path / "images" / captions_file, pd.DataFrame({"file_name": names, "caption": CAPTIONS})
    )
    config = ImageDataConfig(path=str(tmp_path / "images"))
    assert resolve_image_format(config) == "folder"
    rows = read_image_rows(config)
    assert_rows(rows)
    assert rows.describe(1) == str(tmp_path / "images" / "img1.png")


def test_folder_explicit_captions_file_in_a_subfolder(tmp_path):
    names = make_images(tmp_path / "images")
    (tmp_path / "images" / "meta").mkdir()
    records = [{"file_name": n, "text": c} for n, c in zip(names, CAPTIONS, strict=True)]
    write_jsonl(tmp_path / "images" / "meta" / "mine.jsonl", records)
    config = ImageDataConfig(
        path=str(tmp_path / "images"), captions_file="meta/mine.jsonl", caption_column="text"
    )
    assert_rows(read_image_rows(config))  # image names stay relative to the folder


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_table_formats_round_trip(tmp_path, suffix):
    names = make_images(tmp_path / "images")
    path = tmp_path / f"rows{suffix}"
    write_table(path, pd.DataFrame(table_records([f"images/{name}" for name in names])))
    config = ImageDataConfig(path=str(path))
    assert resolve_image_format(config) == suffix[1:]
    assert_rows(read_image_rows(config))


def test_table_absolute_paths_and_explicit_format(tmp_path):
    names = make_images(tmp_path / "images")
    path = tmp_path / "rows.txt"  # the suffix says nothing; data.format does
    write_jsonl(path, table_records([str(tmp_path / "images" / name) for name in names]))
    assert_rows(read_image_rows(ImageDataConfig(path=str(path), format="jsonl")))


def test_limit_reads_the_first_rows(tmp_path):
    names = make_images(tmp_path)
    write_jsonl(tmp_path / "rows.jsonl", table_records(names))
    assert_rows(read_image_rows(ImageDataConfig(path=str(tmp_path / "rows.jsonl"), limit=2)), 2)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_images_are_converted_to_rgb(tmp_path, mode):
    Image.new("RGB", (4, 3), (10, 20, 30)).convert(mode).save(tmp_path / "a.png")
    write_jsonl(tmp_path / "rows.jsonl", [{"image": "a.png", "caption": "a square"}])
    image = read_image_rows(ImageDataConfig(path=str(tmp_path / "rows.jsonl"))).image(0)
    expected = np.asarray(Image.new("RGB", (4, 3), (10, 20, 30)).convert(mode).convert("RGB"))
    assert image.mode == "RGB"
    assert (np.asarray(image) == expected).all()


def saved_dataset(tmp_path: Path, dict_split: str | None = None) -> Path:
    """A saved dataset of the three images in a ``datasets.Image`` column; inside a
    DatasetDict under ``dict_split`` when given."""
    names = make_images(tmp_path / "images")
    files = [str(tmp_path / "images" / name) for name in names]
    dataset = datasets.Dataset.from_dict({"image": files, "caption": CAPTIONS})
    dataset = dataset.cast_column("image", datasets.Image())
    saved = tmp_path / "saved"
    if dict_split:
        datasets.DatasetDict({dict_split: dataset}).save_to_disk(str(saved))
    else:
        dataset.save_to_disk(str(saved))
    for file in files:  # the images must come from the saved dataset, not the files
        Path(file).unlink()
    return saved


def test_saved_hf_dataset_with_image_column(tmp_path):
    config = ImageDataConfig(path=str(saved_dataset(tmp_path)))
    assert resolve_image_format(config) == "hf"
    rows = read_image_rows(config)
    assert_rows(rows)
    assert rows.describe(2) == "dataset row 2"
    assert rows.describe(-1) == "dataset row 2"
    with pytest.raises(IndexError):
        rows.image(3)
    limited = read_image_rows(ImageDataConfig(path=str(saved_dataset(tmp_path)), limit=1))
    assert_rows(limited, 1)


def test_saved_hf_dataset_dict_split(tmp_path):
    saved = saved_dataset(tmp_path, dict_split="validation")
    assert_rows(read_image_rows(ImageDataConfig(path=str(saved), split="validation")))
    with pytest.raises(ValueError, match=r"split 'train' not in .*available: \['validation'\]"):
        read_image_rows(ImageDataConfig(path=str(saved)))


def test_saved_hf_dataset_with_path_column(tmp_path, monkeypatch):
    names = make_images(tmp_path / "images")
    monkeypatch.chdir(tmp_path)  # relative paths in a dataset are relative to the current folder
    paths = [f"images/{name}" for name in names]
    datasets.Dataset.from_dict({"image": paths, "caption": CAPTIONS}).save_to_disk("saved")
    rows = read_image_rows(ImageDataConfig(path="saved"))
    assert_rows(rows)
    assert rows.describe(0) == str(Path("images/img0.png"))


def test_hub_name_goes_to_load_dataset(tmp_path, monkeypatch):
    names = make_images(tmp_path)
    files = [str(tmp_path / name) for name in names]
    dataset = datasets.Dataset.from_dict({"image": files, "caption": CAPTIONS})
    calls = []

    def load_dataset(path, split):
        calls.append((path, split))
        return dataset.cast_column("image", datasets.Image())

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    config = ImageDataConfig(path="someone/pictures", split="test")
    assert resolve_image_format(config) == "hf"
    assert_rows(read_image_rows(config))
    assert calls == [("someone/pictures", "test")]


def error_of(error: type[Exception], **settings: object) -> str:
    with pytest.raises(error) as caught:
        read_image_rows(ImageDataConfig(**settings))  # type: ignore[arg-type]
    return str(caught.value)


def test_missing_path(tmp_path):
    message = error_of(FileNotFoundError, path=str(tmp_path / "nowhere.jsonl"))
    assert "nowhere.jsonl" in message and "does not exist" in message
    message = error_of(FileNotFoundError, path=str(tmp_path / "nowhere"))
    assert "nowhere" in message and "Hub dataset name" in message
    assert "no input data" in error_of(ValueError, path="")


def test_unknown_format(tmp_path):
    with pytest.raises(ValueError, match=r"'tiff'.*folder, jsonl, parquet, csv, hf"):
        ImageDataConfig(path=str(tmp_path), format="tiff")
    (tmp_path / "rows.txt").write_text("x")
    message = error_of(ValueError, path=str(tmp_path / "rows.txt"))
    assert "rows.txt" in message and "data.format" in message


def test_missing_column_lists_the_available_ones(tmp_path):
    names = make_images(tmp_path)
    write_jsonl(tmp_path / "rows.jsonl", table_records(names))
    message = error_of(ValueError, path=str(tmp_path / "rows.jsonl"), caption_column="text")
    assert "'text'" in message and "image, caption" in message
    message = error_of(ValueError, path=str(saved_dataset(tmp_path)), image_column="img")
    assert "'img'" in message and "image, caption" in message


def test_folder_without_captions_file_names_those_tried(tmp_path):
    make_images(tmp_path)
    message = error_of(FileNotFoundError, path=str(tmp_path))
    assert "metadata.jsonl, captions.jsonl, captions.csv" in message
    message = error_of(FileNotFoundError, path=str(tmp_path), captions_file="mine.csv")
    assert "tried mine.csv" in message


def test_missing_image_file_names_file_and_row(tmp_path):
    names = make_images(tmp_path)
    (tmp_path / names[1]).unlink()
    write_jsonl(tmp_path / "rows.jsonl", table_records(names))
    message = error_of(FileNotFoundError, path=str(tmp_path / "rows.jsonl"))
    assert "img1.png" in message and "row 1" in message and "1 missing" in message


def test_unreadable_image_names_the_file(tmp_path):
    names = make_images(tmp_path)
    (tmp_path / names[2]).write_bytes(b"not a png")
    write_jsonl(tmp_path / "rows.jsonl", table_records(names))
    rows = read_image_rows(ImageDataConfig(path=str(tmp_path / "rows.jsonl")))
    rows.image(0)  # the others still read
    with pytest.raises(ValueError, match=r"cannot read image file .*img2\.png.*row 2"):
        rows.image(2)


def test_undecodable_dataset_image_names_the_row(tmp_path):
    junk = {"bytes": b"not a png", "path": None}
    dataset = datasets.Dataset.from_dict({"image": [junk], "caption": ["junk"]})
    dataset.cast_column("image", datasets.Image()).save_to_disk(str(tmp_path / "saved"))
    rows = read_image_rows(ImageDataConfig(path=str(tmp_path / "saved")))
    with pytest.raises(ValueError, match="cannot read the image of dataset row 0"):
        rows.image(0)


def test_bad_dataset_caption_names_the_row(tmp_path):
    saved = saved_dataset(tmp_path)
    dataset = datasets.load_from_disk(str(saved))
    dataset = dataset.map(
        lambda row, i: {"caption": "" if i == 1 else row["caption"]}, with_indices=True
    )
    dataset.save_to_disk(str(tmp_path / "edited"))
    message = error_of(ValueError, path=str(tmp_path / "edited"))
    assert "caption of row 1 (dataset row 1) is empty" in message


@pytest.mark.parametrize(
    ("caption", "expected"), [("", "is empty"), ("  ", "is empty"), (None, "must be text")]
)
def test_bad_caption_names_the_row(tmp_path, caption, expected):
    names = make_images(tmp_path)
    records = table_records(names)
    records[1]["caption"] = caption
    write_jsonl(tmp_path / "rows.jsonl", records)
    message = error_of(ValueError, path=str(tmp_path / "rows.jsonl"))
    assert "row 1" in message and "img1.png" in message and expected in message


def test_bad_image_column_values(tmp_path):
    records = [{"image": 3, "caption": "three"}]
    write_jsonl(tmp_path / "rows.jsonl", records)
    message = error_of(ValueError, path=str(tmp_path / "rows.jsonl"))
    assert "'image'" in message and "row 0 holds 3" in message
    ints = datasets.Dataset.from_dict({"image": [1], "caption": ["one"]})
    ints.save_to_disk(str(tmp_path / "saved"))
    message = error_of(ValueError, path=str(tmp_path / "saved"))
    assert "datasets.Image" in message and "int64" in message


def test_no_rows(tmp_path):
    (tmp_path / "rows.csv").write_text("image,caption\n")
    message = error_of(ValueError, path=str(tmp_path / "rows.csv"))
    assert "rows.csv" in message and "no (image, caption) rows" in message


def test_read_captions_from_tables_and_text(tmp_path):
    write_jsonl(tmp_path / "held.jsonl", [{"text": caption} for caption in CAPTIONS])
    assert read_captions(str(tmp_path / "held.jsonl"), "text", None) == CAPTIONS
    pd.DataFrame({"caption": CAPTIONS}).to_csv(tmp_path / "held.csv", index=False)
    assert read_captions(str(tmp_path / "held.csv"), "caption", 2) == CAPTIONS[:2]
    (tmp_path / "held.txt").write_text(f"{CAPTIONS[0]}\n\n  {CAPTIONS[1]}  \n{CAPTIONS[2]}\n\n")
    assert read_captions(str(tmp_path / "held.txt"), "ignored", None) == CAPTIONS
    assert read_captions(str(tmp_path / "held.txt"), "ignored", 1) == CAPTIONS[:1]


def test_read_captions_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"held\.txt"):
        read_captions(str(tmp_path / "held.txt"), "caption", None)
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(ValueError, match=r"blank\.txt.*no captions"):
        read_captions(str(tmp_path / "blank.txt"), "caption", None)
    write_jsonl(tmp_path / "held.jsonl", [{"text": caption} for caption in CAPTIONS])
    with pytest.raises(ValueError, match=r"'caption' not found.*columns there: text"):
        read_captions(str(tmp_path / "held.jsonl"), "caption", None)

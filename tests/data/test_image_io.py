"""Images and masks in the real formats (issue #26, items 3 and 4): the pixel budget read from the header,
corrupt and truncated files, EXIF orientation, fsslab's one binary-mask convention, YAML alias bombs."""

from __future__ import annotations

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from fsslab.config.safe_yaml import load_yaml
from fsslab.data.io import (
    DEFAULT_MAX_PIXELS,
    DatasetError,
    ImageTooLargeError,
    binary_mask,
    read_binary_mask_file,
    read_header,
    read_image,
    read_image_header,
    read_pair,
    set_max_pixels,
)
from fsslab.errors import ConfigError


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose IHDR claims ``width`` x ``height`` (one tiny IDAT, IEND): what a decompression bomb's header
    looks like, written in microseconds."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def jpeg_bytes(array: np.ndarray, orientation: int | None = None, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    if orientation is None:
        image.save(buffer, "JPEG", quality=quality)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        image.save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------------------------------- pixel budget
def test_a_huge_header_is_refused_before_decoding_and_the_budget_can_be_raised(tmp_path, monkeypatch):
    png_header_only(tmp_path / "bomb.png", 20000, 20000)
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError, match=r"bomb.png is 20000x20000 \(WxH, 400.0 megapixels\), over "
                                                  r"fsslab's budget of 64.0 megapixels.*FSSLAB_MAX_PIXELS=400000000"):
        read_image(tmp_path / "bomb.png")
    assert time.perf_counter() - start < 1.0  # no decoding happened
    monkeypatch.setenv("FSSLAB_MAX_PIXELS", "500000000")  # raised: the header passes (Pillow's own limit too)
    assert read_header(tmp_path / "bomb.png").shape == (20000, 20000)
    monkeypatch.setenv("FSSLAB_MAX_PIXELS", "lots")
    with pytest.raises(ConfigError, match="FSSLAB_MAX_PIXELS='lots' is not a positive number"):
        read_header(tmp_path / "bomb.png")
    monkeypatch.delenv("FSSLAB_MAX_PIXELS")
    set_max_pixels(100)
    try:
        Image.fromarray(noise(20, 20)).save(tmp_path / "small.png")
        with pytest.raises(ImageTooLargeError, match="400 .*budget of 0.0 megapixels|20x20"):
            read_image(tmp_path / "small.png")
    finally:
        set_max_pixels(None)
    assert DEFAULT_MAX_PIXELS == 64_000_000


# ---------------------------------------------------------------------------------- corrupt and truncated
def test_a_corrupt_jpeg_is_refused_naming_the_decoder_warning(tmp_path):
    data = bytearray(jpeg_bytes(noise(128, 128), quality=90))
    scan = data.find(b"\xff\xda")
    for i in range(scan + 400, len(data) - 200, 5):  # garbage inside the entropy-coded scan, markers kept
        if data[i] != 0xFF and data[i - 1] != 0xFF:
            data[i] = 0x55
    (tmp_path / "corrupt.jpg").write_bytes(bytes(data))
    with pytest.raises(DatasetError, match=r"corrupt image .*corrupt.jpg: the JPEG decoder reported 'Corrupt JPEG data"):
        read_image(tmp_path / "corrupt.jpg")
    (tmp_path / "fine.jpg").write_bytes(jpeg_bytes(noise(64, 48)))
    assert read_image(tmp_path / "fine.jpg").shape == (64, 48, 3)


def test_truncated_files_and_directories_are_named(tmp_path):
    buffer = io.BytesIO()
    Image.fromarray(noise(64, 64)).save(buffer, "PNG")
    (tmp_path / "cut.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DatasetError, match="cut.png: truncated PNG"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(DatasetError, match="cut.png: truncated PNG"):
        read_binary_mask_file(tmp_path / "cut.png")
    with pytest.raises(DatasetError, match="is a directory, not a file"):
        read_image(tmp_path)


# -------------------------------------------------------------------------------------- EXIF orientation
def test_exif_orientation_is_applied_to_the_image_and_its_mask_aligned(tmp_path):
    stored = np.zeros((40, 60, 3), np.uint8)
    stored[:, :30] = 255  # white left half as stored
    (tmp_path / "rotated.jpg").write_bytes(jpeg_bytes(stored, orientation=6))  # displayed turned 90° clockwise
    image, header = read_image_header(tmp_path / "rotated.jpg")
    assert image.shape == (60, 40, 3) and header.orientation == 6 and header.stored_shape == (40, 60)
    assert image[:30].mean() > 200 and image[30:].mean() < 50  # the stored left half is now the top half
    mask = np.zeros((40, 60), np.uint8)
    mask[:, :30] = 255  # drawn on the stored pixels: turned with its image
    Image.fromarray(mask).save(tmp_path / "stored_frame.png")
    aligned = read_binary_mask_file(tmp_path / "stored_frame.png", header)
    assert aligned.shape == (60, 40) and aligned[:30].all() and not aligned[30:].any()
    displayed = np.zeros((60, 40), np.uint8)
    displayed[:30] = 1  # drawn on the image as displayed: taken as it is
    Image.fromarray(displayed).save(tmp_path / "displayed_frame.png")
    assert (read_binary_mask_file(tmp_path / "displayed_frame.png", header) == displayed).all()


def test_an_exif_mask_that_could_be_either_frame_is_refused_naming_exif(tmp_path):
    square = noise(48, 48)
    (tmp_path / "square.jpg").write_bytes(jpeg_bytes(square, orientation=3))
    mask = np.zeros((48, 48), np.uint8)
    mask[:, :24] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    _, header = read_image_header(tmp_path / "square.jpg")
    with pytest.raises(DatasetError, match=r"mask .*mask.png is ambiguous: its image .*square.jpg carries the EXIF "
                                           r"orientation 3 \(rotate 180\)"):
        read_binary_mask_file(tmp_path / "mask.png", header)
    # a mask with the same orientation tag is displayed as its image: no ambiguity
    tagged = Image.fromarray(mask)
    exif = Image.Exif()
    exif[0x0112] = 3
    tagged.save(tmp_path / "tagged.png", exif=exif.tobytes())
    assert (read_binary_mask_file(tmp_path / "tagged.png", header) == (mask[::-1, ::-1] > 0)).all()


def test_a_voc_pair_with_exif_is_read_in_one_frame(tmp_path):
    stored = noise(30, 50)
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(stored, orientation=8))
    label = np.zeros((30, 50), np.uint8)
    label[:10] = 3
    Image.fromarray(label).save(tmp_path / "a.png")
    image, aligned = read_pair(tmp_path / "a.jpg", tmp_path / "a.png", n_classes=5)
    assert image.shape[:2] == aligned.shape == (50, 30)
    assert (aligned == np.rot90(label, 1)).all()
    # a square benchmark image turned by 180°: its label map is read as stored, as the reference loaders read it
    (tmp_path / "b.jpg").write_bytes(jpeg_bytes(noise(30, 30), orientation=3))
    Image.fromarray(label[:, :30]).save(tmp_path / "b.png")
    assert (read_pair(tmp_path / "b.jpg", tmp_path / "b.png", n_classes=5)[1] == label[:, :30]).all()


# ---------------------------------------------------------------------------------------- mask convention
@pytest.mark.parametrize(("values", "expected"), [
    ([[0, 255], [255, 0]], [[0, 1], [1, 0]]),  # 0/255
    ([[0, 1], [1, 0]], [[0, 1], [1, 0]]),  # 0/1
    ([[0, 100], [100, 0]], [[0, 1], [1, 0]]),  # 0/100: one non-zero value is the object
    ([[0, 1], [255, 1]], [[0, 1], [255, 1]]),  # VOC: 255 is an ignore band, 1 the object
    ([[255, 255], [255, 255]], [[1, 1], [1, 1]]),  # one value: all object
])
def test_the_one_mask_convention(values, expected):
    assert binary_mask(np.array(values, np.uint8), "m", allow_empty=True).tolist() == expected


@pytest.mark.parametrize("values", [[[0, 128], [255, 0]], [[0, 1], [2, 0]], [[0, 3], [7, 0]]])
def test_ambiguous_masks_are_refused_not_guessed(values):
    with pytest.raises(DatasetError, match="is not binary: it holds the values"):
        binary_mask(np.array(values, np.uint8), "m.png")


def test_the_fss1000_threshold_never_reads_a_mask_as_empty():
    assert binary_mask(np.array([[0, 100, 200, 255]]), "m", threshold=128, allow_empty=True).tolist() == [[0, 0, 1, 1]]
    with pytest.raises(DatasetError, match="none reaches the object threshold 128"):
        binary_mask(np.array([[0, 100], [100, 0]]), "m.png", threshold=128, allow_empty=True)


# ------------------------------------------------------------------------------------------------ YAML
def test_yaml_alias_bombs_are_refused_quickly():
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    levels += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]" for i in range(8)]
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="expand to more than 100000 values"):
        load_yaml("model:\n  params:\n" + "\n".join("    " + line for line in levels), "bomb.yaml")
    assert time.perf_counter() - start < 1.0
    with pytest.raises(ConfigError, match="recursive anchor"):
        load_yaml("a: &a [1, *a]", "loop.yaml")
    assert load_yaml("x: &v [1, 2]\ny: *v", "ok.yaml") == {"x": [1, 2], "y": [1, 2]}

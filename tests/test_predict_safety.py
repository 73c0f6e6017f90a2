"""`fsslab predict` never destroys or re-reads a user's files, checks every input and output before the model
loads, and refuses broken weights and absurd sizes (issue #26, items 1, 3 and 6). Small images, the shipped
baseline: each test runs in about a second."""

from __future__ import annotations

import errno
import io
import json
import struct
import warnings
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

import fsslab
from fsslab.cli import main
from fsslab.errors import FsslabWarning
from fsslab.predict import PredictError, Support, load_model, predict, write_predictions
from fsslab.zoo import pretrained_config

pytestmark = pytest.mark.usefixtures("one_thread")
MODEL = ["--pretrained", "baseline_tiny_fold0_1shot", "--device", "cpu", "--no-progress"]


def _photo(path, seed: int, size=(48, 64)) -> None:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 80, (*size, 3), dtype=np.uint8)
    image[10:30, 15:40] = (200, 60, 40)
    Image.fromarray(image).save(path)


@pytest.fixture
def photos(tmp_path):
    """photos/cat.png, dog.png and the hand-drawn cat_mask.png (0/255), as the issue's user had them."""
    folder = tmp_path / "photos"
    folder.mkdir()
    _photo(folder / "cat.png", 0)
    _photo(folder / "dog.png", 1)
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 15:40] = 255
    Image.fromarray(mask).save(folder / "cat_mask.png")
    return folder


def _run(*arguments, capsys):
    """Exit status, stdout, and stderr with the notices (FsslabWarning: "warning: ..." lines on the terminal)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FsslabWarning)
        status = main(["predict", *MODEL, *map(str, arguments)])
    captured = capsys.readouterr()
    notices = "".join(f"warning: {w.message}\n" for w in caught if issubclass(w.category, FsslabWarning))
    return status, captured.out, captured.err + notices


def test_out_into_the_query_folder_never_overwrites_nor_rereads(photos, capsys):
    hand_drawn = (photos / "cat_mask.png").read_bytes()
    support = f"{photos / 'cat.png'}:{photos / 'cat_mask.png'}"
    status, out, err = _run("--support", support, photos, "--out", photos, capsys=capsys)
    assert status == 0, err
    assert json.loads(out)["queries"] == 2  # cat.png and dog.png: the support mask is no query
    assert "left out the support mask/scribble file(s) cat_mask.png" in err
    assert "written beside them: cat_mask.png -> cat_2_mask.png" in err
    assert (photos / "cat_mask.png").read_bytes() == hand_drawn  # the user's mask is untouched
    records = [json.loads(line) for line in (photos / "predictions.jsonl").read_text().splitlines()]
    assert [(r["query"].split("/")[-1], r["mask"]) for r in records] == [("cat.png", "cat_2_mask.png"),
                                                                          ("dog.png", "dog_mask.png")]
    before = {p.name: p.read_bytes() for p in photos.iterdir()}
    # a second run into the same folder: refused, nothing changed
    status, _, err = _run("--support", support, photos, "--out", photos, capsys=capsys)
    assert status == 2 and "already holds predictions (predictions.jsonl and 4 file(s)" in err and "--overwrite" in err
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == before
    # --overwrite: the earlier outputs are neither queries nor kept; the user's files stay
    status, out, err = _run("--support", support, photos, "--out", photos, "--overwrite", capsys=capsys)
    assert status == 0 and json.loads(out)["queries"] == 2, err
    assert "left out 4 file(s) written by an earlier fsslab predict" in err
    assert sorted(p.name for p in photos.iterdir()) == sorted(before)
    assert (photos / "cat_mask.png").read_bytes() == hand_drawn
    assert not list(photos.glob(".fsslab-predict-*"))


def test_out_that_is_a_file_or_unwritable_fails_before_the_model_loads(photos, tmp_path, capsys, monkeypatch):
    support = f"{photos / 'cat.png'}:{photos / 'cat_mask.png'}"
    (tmp_path / "file").write_text("x")
    status, _, err = _run("--support", support, photos / "dog.png", "--out", tmp_path / "file", capsys=capsys)
    assert status == 2 and "--out " in err and "is a file, not a folder" in err and "Traceback" not in err
    import fsslab.predict.io as pio

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    loaded = []
    monkeypatch.setattr(pio.tempfile, "mkdtemp", read_only)
    monkeypatch.setattr(fsslab.predict, "load_model", lambda *a, **k: loaded.append(1))
    status, _, err = _run("--support", support, photos / "dog.png", "--out", tmp_path / "ro", capsys=capsys)
    assert status == 2 and "cannot write the results to --out" in err and "Read-only file system" in err
    assert not loaded


def test_a_failure_mid_set_leaves_no_output(tmp_path):
    out = tmp_path / "out"
    image = np.zeros((8, 8, 3), np.uint8)
    good = fsslab.predict.Prediction("a.png", image, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.float32))

    def predictions():
        yield good
        raise MemoryError("the second query is too large")

    with pytest.raises(MemoryError):
        write_predictions(predictions(), out)
    assert not out.exists()  # no half-written set, no staging folder, not even the folder it created
    assert [r["mask"] for r in write_predictions([good], out)] == ["a_mask.png"]
    with pytest.raises(PredictError, match="already holds predictions"):
        write_predictions([good], out)


def test_queries_are_decoded_before_the_model_loads(photos, tmp_path, capsys):
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(buffer, "PNG")
    (photos / "zz_truncated.png").write_bytes(buffer.getvalue()[:60])
    support = f"{photos / 'cat.png'}:{photos / 'cat_mask.png'}"
    status, _, err = _run("--support", support, photos, "--out", tmp_path / "out", capsys=capsys)
    assert status == 2 and "query image" in err and "zz_truncated.png is unreadable: truncated PNG" in err
    assert not (tmp_path / "out").exists()


def test_huge_queries_and_sizes_are_bounded(photos, tmp_path, capsys):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    (tmp_path / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8,
                                        2, 0, 0, 0)) + chunk(b"IDAT", zlib.compress(b"\0" * 9)) + chunk(b"IEND", b""))
    support = f"{photos / 'cat.png'}:{photos / 'cat_mask.png'}"
    status, _, err = _run("--support", support, tmp_path / "huge.png", "--out", tmp_path / "o", capsys=capsys)
    assert status == 2 and "20000x20000" in err and "--max-pixels" in err and "Traceback" not in err
    for size in ("0", "60000", "-5"):
        status, _, err = _run("--support", support, photos / "dog.png", "--size", size, "--out", tmp_path / "o",
                              capsys=capsys)
        assert status == 2 and "--size must be an integer from 16 to 4096 pixels" in err and size in err, err
    status, _, err = _run("--support", photos / "cat.png", "--box", "-10,0,20,20", photos / "dog.png",
                          "--out", tmp_path / "o", capsys=capsys)
    assert status == 2 and "box -10,0,20,20 does not fit" in err
    assert not (tmp_path / "o").exists()


def test_broken_checkpoints_are_refused(photos, tmp_path, capsys):
    module = load_model(pretrained="baseline_tiny_fold0_1shot").module
    config = pretrained_config("baseline_tiny_fold0_1shot").to_dict()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].fill_(float("nan"))
    torch.save({"model": state, "config": config}, tmp_path / "nan.pt")
    torch.save({"model": list(state.values()), "config": config}, tmp_path / "list.pt")
    support = f"{photos / 'cat.png'}:{photos / 'cat_mask.png'}"
    base = ["predict", "--support", support, str(photos / "dog.png"), "--out", str(tmp_path / "o"), "--device", "cpu"]
    assert main([*base, "--checkpoint", str(tmp_path / "nan.pt")]) == 2
    err = capsys.readouterr().err
    assert "weight tensor(s) hold NaN or inf" in err and first in err
    assert main([*base, "--checkpoint", str(tmp_path / "list.pt")]) == 2
    assert "its 'model' entry is a list, not a state dict" in capsys.readouterr().err
    assert main([*base, "--checkpoint", str(tmp_path)]) == 2
    assert "is a directory, not a checkpoint file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


class NanModel(torch.nn.Module):
    def forward(self, batch):
        return SimpleNamespace(logits=torch.full((1, 2, *batch["query_img"].shape[-2:]), float("nan")))


def test_the_api_refuses_nan_outputs_and_bad_types_and_reads_pil_images():
    image = np.zeros((32, 32, 3), np.uint8)
    label = np.zeros((32, 32), np.uint8)
    label[8:24, 8:24] = 255  # 0/255: 255 is the object, as the CLI reads a mask file
    support = Support(image, label)
    assert support.label.max() == 1 and support.label.sum() == 256
    with pytest.raises(PredictError, match="output for query_0 holds NaN or inf"):
        predict(NanModel(), [support], [image], size=32)
    with pytest.raises(PredictError, match="the image is empty"):
        predict(NanModel(), [support], [np.zeros((0, 0, 3), np.uint8)], size=32)
    with pytest.raises(PredictError, match="expected an image path, a folder, an RGB uint8 array or a PIL image, got int"):
        predict(NanModel(), [support], [3], size=32)
    with pytest.raises(PredictError, match="supports: expected a list of fsslab.predict.Support"):
        predict(NanModel(), ["cat.png"], [image], size=32)
    with pytest.raises(PredictError, match="size must be an integer from 16 to 4096"):
        predict(NanModel(), [support], [image], size=0)

    class Zero(torch.nn.Module):
        def forward(self, batch):
            return SimpleNamespace(logits=torch.zeros((1, 2, *batch["query_img"].shape[-2:])))

    (result,) = fsslab.predict(Zero(), [support], Image.fromarray(image), size=32)
    assert result.mask.shape == (32, 32) and result.summary()["mean_confidence"] == 0.5


def test_exif_supports_are_aligned_or_refused(tmp_path):
    stored = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    mask = np.zeros((30, 50), np.uint8)
    mask[:, :10] = 1  # drawn on the stored pixels (the size tells): turned with the image
    Image.fromarray(mask).save(tmp_path / "mask.png")
    support = Support.from_files(tmp_path / "phone.jpg", mask=tmp_path / "mask.png")
    assert support.image.shape == (50, 30, 3) and support.label[:10].all() and not support.label[10:].any()
    exif[0x0112] = 3
    Image.fromarray(stored[:30, :30]).save(tmp_path / "square.jpg", exif=exif.tobytes())
    Image.fromarray(mask[:, :30]).save(tmp_path / "square_mask.png")
    with pytest.raises(PredictError, match="ambiguous: its image .*square.jpg carries the EXIF orientation 3"):
        Support.from_files(tmp_path / "square.jpg", mask=tmp_path / "square_mask.png")

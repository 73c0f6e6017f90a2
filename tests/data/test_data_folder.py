"""FSS-1000 and class-folder datasets (fsslab.data.episodes.folder) on fixtures written in the real layout
(``<root>/<class>/<n>.jpg`` + ``<n>.png``, masks 0/255 with anti-aliased edges as FSS-1000 ships them)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from fsslab.cli import main
from fsslab.config import ConfigError, load_config
from fsslab.data import DatasetError, EpisodeOptions, build_dataset, fss1000_split, read_binary_mask
from fsslab.data.episodes.folder import (
    FSS1000_SPLIT_DIR,
    check_class_split,
    split_benchmark,
    write_split_file,
)


def write_class(root: Path, name: str, n: int = 3, size: tuple[int, int] = (40, 48), seed: int = 0,
                soft: bool = True) -> None:
    """``n`` jpg/png pairs of one class: a filled ellipse (its colour depends on the class) on noise; the mask
    is 0/255 with a ring of intermediate grey (values 100 and 200) around the object (``soft``, as FSS-1000
    ships them), or 0/255 only (what fsslab's mask convention reads in a ``folder`` dataset)."""
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    height, width = size
    colour = [int(v) for v in rng.integers(60, 255, 3)]
    for i in range(1, n + 1):
        image = rng.integers(0, 50, (height, width, 3), dtype=np.uint8)
        mask = np.zeros((height, width), np.uint8)
        centre = (int(rng.integers(width // 3, 2 * width // 3)), int(rng.integers(height // 3, 2 * height // 3)))
        axes = (width // 4, height // 4)
        cv2.ellipse(mask, centre, (axes[0] + 2, axes[1] + 2), 0, 0, 360, 100 if soft else 0, -1)  # below 128
        cv2.ellipse(mask, centre, (axes[0] + 1, axes[1] + 1), 0, 0, 360, 200 if soft else 255, -1)  # above it
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1)
        image[mask >= 128] = colour
        assert cv2.imwrite(str(folder / f"{i}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        assert cv2.imwrite(str(folder / f"{i}.png"), mask)


SPLIT = {"train": ["ant", "bee", "cat", "dog"], "val": ["eel"], "test": ["fox", "gnu"]}


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("classes")
    for names in SPLIT.values():
        for name in names:
            write_class(root, name, n=3, soft=False)
    return root


@pytest.fixture(scope="module")
def fss_root(tmp_path_factory) -> Path:
    """Every class folder of the shipped FSS-1000 test split (2 small pairs each): evaluation with the real split."""
    root = tmp_path_factory.mktemp("fss") / "FSS-1000"
    for name in fss1000_split()["test"]:
        write_class(root, name, n=2, size=(24, 24))
    return root


def test_the_shipped_split_is_hsnets():
    split = fss1000_split()
    assert {k: len(v) for k, v in split.items()} == {"train": 520, "val": 240, "test": 240}
    assert len({c for names in split.values() for c in names}) == 1000
    assert {"bus", "abe's_flyingfish", "tower_pisa"} <= set(split["test"])
    # ids as HSNet's (0-based there): sorted train classes, then val, then test
    bench = split_benchmark("fss1000", split, "test")
    assert bench.n_classes == 1000 and bench.class_name(1) == min(split["train"])
    assert bench.novel_classes(0) == list(range(761, 1001)) and bench.base_classes(0) == list(range(1, 521))
    assert bench.class_name(761) == min(split["test"])
    assert split_benchmark("fss1000", split, "val").novel_classes(0) == list(range(521, 761))
    with pytest.raises(ConfigError, match="data.fold must be 0"):
        bench.novel_classes(1)
    assert sorted(p.name for p in FSS1000_SPLIT_DIR.glob("*.txt")) == ["test.txt", "train.txt", "val.txt"]


def test_masks_are_binarised_as_hsnet_reads_them(tmp_path):
    grey = np.array([[0, 100, 127, 128, 200, 255]], np.uint8)
    Image.fromarray(grey).save(tmp_path / "l.png")
    assert read_binary_mask(tmp_path / "l.png").tolist() == [[0, 0, 0, 1, 1, 1]]
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "rgb.png")
    assert read_binary_mask(tmp_path / "rgb.png").tolist() == [[0, 0, 0, 1, 1, 1]]
    Image.fromarray(np.array([[0, 1, 1, 0]], np.uint8)).save(tmp_path / "01.png")  # a 0/1 mask as it is
    assert read_binary_mask(tmp_path / "01.png").tolist() == [[0, 1, 1, 0]]
    palette = Image.fromarray(np.array([[0, 3, 0, 7]], np.uint8), mode="P")
    palette.putpalette([0, 0, 0, 128, 0, 0] * 128)
    palette.save(tmp_path / "p.png")
    assert read_binary_mask(tmp_path / "p.png").tolist() == [[0, 1, 0, 1]]


def test_training_and_evaluation_episodes(folder_root):
    train = build_dataset("folder", folder_root, "train", shot=2, size=32, classes=SPLIT)
    assert len(train) == 12 and train.benchmark.base_classes(0) == [1, 2, 3, 4]
    sample = train[5]
    assert sample["support_imgs"].shape == (2, 3, 32, 32) and sample["query_mask"].shape == (32, 32)
    assert int(sample["class_id"]) in (1, 2, 3, 4) and set(sample["query_mask"].unique().tolist()) <= {0, 1, 255}
    assert (sample["query_base_mask"] == 255).all()  # no base-class annotation in this layout

    test = build_dataset("folder", folder_root, "test", shot=2, size=32, classes=SPLIT, episodes=12, seed=3)
    assert test.benchmark.novel_classes(0) == [6, 7] and test.benchmark.class_name(6) == "fox"
    index = test.index
    for episode in test.episodes:  # supports: other images of the query's own class folder
        assert episode.query not in episode.supports and len(set(episode.supports)) == 2
        folders = {index.items[i][0].split("/")[0] for i in (episode.query, *episode.supports)}
        assert folders == {test.benchmark.class_name(episode.class_id)}
    assert [e.query for e in test.episodes[:6]] == list(range(6))  # every image once, in folder order
    sample = test[0]
    mask_rel = index.items[0][1]
    expected = (cv2.imread(str(folder_root / mask_rel), cv2.IMREAD_GRAYSCALE) >= 128).astype(np.int64)
    label = sample["query_mask_ori"][: expected.shape[0], : expected.shape[1]]
    assert torch.equal(label, torch.from_numpy(expected)) and tuple(sample["query_ori_size"]) == (40, 48)
    assert (sample["support_masks"] == 1).any()
    # a split file gives the same dataset; the HSNet split name "trn" is the training split
    split_file = write_split_file(folder_root.parent / "split.json", SPLIT)
    again = build_dataset("folder", folder_root, "test", shot=2, size=32, split_file=split_file, episodes=12, seed=3)
    assert again.episodes == test.episodes
    assert check_class_split({"trn": ["a"], "test": ["b"]}) == {"train": ["a"], "test": ["b"]}


def test_fss1000_evaluation_with_the_shipped_split_scores_the_oracle_100(fss_root, tmp_path, capsys):
    """`fsslab eval ... data.dataset=fss1000` on every test class folder (HSNet's evaluation: every test image
    once as the query, inputs stretched to a square, FB-IoU and mIoU over the 240 test classes). The config scores
    as HSNet's test.py (eval.protocol=hsnet, at the input resolution: lossy, tests/data/test_official_scoring.py);
    the oracle must score 100 through fsslab's exact inverse of the same input transform."""
    assert load_config("fss1000/ipmt_r50_1shot").eval.protocol == "hsnet"
    out = tmp_path / "oracle.json"
    args = ["eval", "fss1000/ipmt_r50_1shot", "model.name=oracle", f"data.root={fss_root}", "eval.episodes=480",
            "data.val_size=32", "data.workers=0", "eval.batch_size=16", "eval.protocol=fsslab", "--json", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    with pytest.raises(DatasetError, match=f"data.root should probably be {fss_root}$"):  # one level too high
        build_dataset("fss1000", fss_root.parent, "test")
    result = json.loads(out.read_text())
    assert result["miou"] == pytest.approx(100) and result["fbiou"] == pytest.approx(100)
    assert len(result["class_iou"]) == 240 and min(map(int, result["class_iou"])) == 761
    assert result["settings"]["dataset"] == "fss1000" and result["settings"]["eval_protocol"] == "fsslab"


def test_train_then_eval_a_tiny_model_on_your_own_classes(folder_root, tmp_path, capsys):
    split_file = tmp_path / "split.yaml"
    split_file.write_text("train: [ant, bee, cat, dog]\ntest: [fox, gnu]\n")
    config = tmp_path / "tiny.yaml"
    config.write_text(f"""
name: folder_tiny
data: {{dataset: folder, root: "{folder_root}", params: {{split_file: "{split_file}"}}, size: 32, val_size: 32,
       batch_size: 2, workers: 0}}
model: {{name: baseline, params: {{backbone: resnet_tiny, learn_threshold: true}}}}
train: {{iterations: 2, log_every: 1, tensorboard: false, progress: false, device: cpu, validate: false,
        out_dir: "{tmp_path}/run"}}
eval: {{episodes: 4, seeds: [0], split: test}}
""")
    assert main(["train", str(config)]) == 0, capsys.readouterr().err
    out = tmp_path / "eval.json"
    assert main(["eval", str(config), "--checkpoint", str(tmp_path / "run" / "latest.pt"), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert 0 <= result["miou"] <= 100 and result["settings"]["class_names"] == {"5": "fox", "6": "gnu"}


def test_a_shipped_checkpoint_evaluates_on_fss1000_layout_data(folder_root, tmp_path, capsys):
    split_file = write_split_file(tmp_path / "split.json", {"train": ["ant", "bee"], "test": ["fox", "gnu"]})
    out = tmp_path / "ipmt.json"
    args = ["eval", "synthetic/ipmt_tiny", "--pretrained", "ipmt_tiny_fold0_1shot", "data.dataset=fss1000",
            f"data.root={folder_root}", f"data.params.split_file={split_file}", "data.synthetic=null",
            "eval.split=test", "eval.episodes=2", "eval.seeds=[0]", "data.val_size=48", "data.workers=0",
            "--json", str(out)]  # fmt: skip
    assert main(args) == 0, capsys.readouterr().err
    assert 0 <= json.loads(out.read_text())["miou"] <= 100


def _layout(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for name in ("ant", "fox"):
        write_class(root, name, n=2)
    return root


@pytest.mark.parametrize("problem", ["image without mask", "mask without image", "no pairs", "mask size",
                                     "missing class folder"])  # fmt: skip
def test_bad_layouts_raise_one_line_errors_naming_the_file(tmp_path, problem):
    root = _layout(tmp_path)
    classes = {"train": ["ant"], "test": ["fox"]}
    if problem == "image without mask":
        (root / "fox" / "2.png").unlink()
        named = str(root / "fox" / "2.jpg")
    elif problem == "mask without image":
        (root / "fox" / "2.jpg").unlink()
        named = str(root / "fox" / "2.png")
    elif problem == "no pairs":
        for path in (root / "fox").iterdir():
            path.unlink()
        (root / "fox" / "notes.txt").write_text("x")
        named = f"class folder {root / 'fox'} holds no"
    elif problem == "mask size":
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(root / "fox" / "1.png")
        named = str(root / "fox" / "1.png")
    else:
        classes["test"].append("owl")
        named = f"1 of 2 class folders of the test split missing under {root}: owl"
    with pytest.raises(DatasetError) as err:
        build_dataset("folder", root, "test", classes=classes, episodes=2)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_bad_splits_and_options(tmp_path, capsys):
    root = _layout(tmp_path)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nope.yaml")):
        build_dataset("folder", root, "test", split_file=tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="needs its class split"):
        build_dataset("folder", root, "test")
    with pytest.raises(ConfigError, match="'fox' is in 'train' and in split 'test'"):
        build_dataset("folder", root, "test", classes={"train": ["ant", "fox"], "test": ["fox"]})
    with pytest.raises(ConfigError, match=r"no 'val' split \(it has \['train', 'test'\]\)"):
        build_dataset("folder", root, "val", classes={"train": ["ant"], "test": ["fox"]})
    with pytest.raises(ConfigError, match="data.fold must be 0"):
        build_dataset("folder", root, "test", fold=2, classes={"train": ["ant"], "test": ["fox"]})
    (tmp_path / "bad.yaml").write_text("- ant\n- fox\n")
    with pytest.raises(ConfigError, match="bad.yaml: expected a mapping"):
        build_dataset("folder", root, "test", split_file=tmp_path / "bad.yaml")
    # the real FSS-1000 split on a root without its class folders ("fox" is one of them)
    with pytest.raises(DatasetError, match=r"239 of 240 class folders of the test split missing .*: abe's_flyin"):
        build_dataset("fss1000", root, "test")
    # through the command line: one error line (and the FSSLAB_DEBUG hint), exit status 2, the file named
    args = ["eval", "synthetic/baseline_tiny", "model.name=oracle", "data.dataset=folder", f"data.root={root}",
            f"data.params.split_file={tmp_path / 'missing.yaml'}", "eval.split=test"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith(f"fsslab eval: error: split file not found: {tmp_path / 'missing.yaml'} ")
    assert "Traceback" not in "".join(err)


def test_class_folders_take_episode_options_without_base_annotations(folder_root):
    options = EpisodeOptions(size=32, episodes=6, seed=1)
    test = build_dataset("folder", folder_root, "test", shot=2, options=options, classes=SPLIT)
    assert (test.options.use_base_mask, test.options.base_label) == (False, "all")
    assert test.episodes == build_dataset("folder", folder_root, "test", shot=2, size=32, episodes=6, seed=1,
                                          classes=SPLIT).episodes
    with pytest.raises(ConfigError, match="no base-class annotations"):
        build_dataset("folder", folder_root, "test", shot=2, options=dataclasses.replace(options, base_label="base"),
                      classes=SPLIT)

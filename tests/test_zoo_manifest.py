"""The zoo is a closed, verified set (issue #26, item 2): a manifest entry's file must lie inside the zoo
directory and carry a sha256 that is checked before loading; anything else is one clear line."""

from __future__ import annotations

import json
import shutil

import pytest

from fsslab.cli import main
from fsslab.files import sha256_file
from fsslab.zoo import (
    CHECKPOINT_DIR,
    ZooError,
    load_pretrained,
    read_manifest,
    verify_pretrained,
)


@pytest.fixture
def zoo(tmp_path):
    """A copy of the shipped zoo (its manifest and files) to damage."""
    root = tmp_path / "zoo"
    shutil.copytree(CHECKPOINT_DIR, root)
    return root


def _edit(root, change):
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_every_file_of_the_shipped_manifest_exists_and_matches():
    manifest = read_manifest()
    records = [(e["file"], e["sha256"]) for e in manifest["entries"].values()]
    records += [(name, r["sha256"]) for name, r in manifest["shared"].items()]
    for file, digest in records:
        assert sha256_file(CHECKPOINT_DIR / file) == digest, file
    referenced = {e.get("shared_file") for e in manifest["entries"].values()} - {None}
    assert referenced == set(manifest["shared"])  # no shared file listed that no entry reads


def test_an_entry_without_a_hash_is_refused(zoo):
    _edit(zoo, lambda m: m["entries"]["ipmt_tiny_fold0_1shot"].update(sha256=None))
    with pytest.raises(ZooError, match=r"entry 'ipmt_tiny_fold0_1shot': 'sha256' must be the 64 hex digits.*None"):
        load_pretrained("ipmt_tiny_fold0_1shot", checkpoint_dir=zoo)
    _edit(zoo, lambda m: m["entries"]["ipmt_tiny_fold0_1shot"].pop("sha256"))
    with pytest.raises(ZooError, match="'sha256' must be the 64 hex digits"):
        read_manifest(zoo)
    _edit(zoo, lambda m: m["shared"]["shared/pspnet_base_tiny_fold0.pt"].update(sha256="abc"))
    with pytest.raises(ZooError, match="shared file 'shared/pspnet_base_tiny_fold0.pt'"):
        read_manifest(zoo)


@pytest.mark.parametrize("file", ["../outside.pt", "/etc/passwd", "shared/../../outside.pt", "link/x.pt"])
def test_a_file_outside_the_zoo_directory_is_refused(zoo, file):
    (zoo.parent / "outside.pt").write_bytes(b"x")
    (zoo / "link").symlink_to(zoo.parent)
    _edit(zoo, lambda m: m["entries"]["ipmt_tiny_fold0_1shot"].update(file=file))
    with pytest.raises(ZooError, match=r"(points|resolves) outside the zoo directory"):
        load_pretrained("ipmt_tiny_fold0_1shot", checkpoint_dir=zoo)


def test_an_entry_pointing_at_another_checkpoint_is_refused(zoo):
    def swap(manifest):
        other = manifest["entries"]["amformer_tiny_fold0_1shot"]
        manifest["entries"]["ipmt_tiny_fold0_1shot"].update(file=other["file"], sha256=other["sha256"])

    _edit(zoo, swap)
    with pytest.raises(ZooError, match="holds the checkpoint 'amformer_tiny_fold0_1shot'"):
        load_pretrained("ipmt_tiny_fold0_1shot", checkpoint_dir=zoo)


def test_incomplete_entries_and_a_mistyped_dir_are_one_line(zoo, tmp_path, capsys):
    _edit(zoo, lambda m: [m["entries"]["ipmt_tiny_fold0_1shot"].pop(k) for k in ("check", "data", "size")])
    with pytest.raises(ZooError, match="records no complete check evaluation"):
        verify_pretrained("ipmt_tiny_fold0_1shot", checkpoint_dir=zoo)
    assert main(["zoo", "list", "--dir", str(zoo)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("ipmt_tiny_fold0_1shot"))
    assert line.split()[1:3] == ["ipmt", "-"]
    assert main(["zoo", "list", "--dir", str(tmp_path / "typo")]) == 2
    assert "zoo directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["zoo", "verify", "--dir", str(tmp_path / "empty")]) == 2
    assert "holds no zoo manifest" in capsys.readouterr().err

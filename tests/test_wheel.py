"""The CLI from an installed wheel, outside the repository: every subcommand's --help, data synth, zoo list.

The wheel is built from a copy of the sources without build isolation (offline: the venv's setuptools), and
installed with --no-deps into a fresh virtual environment that reuses this environment's packages (torch, ...)
through a .pth file; the commands then run from a temporary folder, so nothing of the checkout is reachable.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from fsslab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
# run by the new environment's python: `fsslab <command> --help` for each command -> [[exit status, usage line]]
HELP_SCRIPT = """
import contextlib, io, json, sys
from fsslab.cli import main
results = []
for command in json.loads(sys.argv[1]):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = main([*command, "--help"])
        except SystemExit as stop:
            code = stop.code
    lines = out.getvalue().splitlines()
    results.append([code, lines[0] if lines else ""])
print(json.dumps(results))
"""


def _subcommands() -> list[list[str]]:
    """Every command path of the fsslab parser, e.g. ["data", "synth"], ["zoo", "list"], ["predict"]."""
    found: list[list[str]] = []

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not groups and prefix:
            found.append(prefix)
        for group in groups:
            for name, sub in group.choices.items():
                walk(sub, [*prefix, name])

    walk(build_parser(), [])
    return found


def _can_build_offline() -> str | None:
    """Why a wheel cannot be built without the network here, or None."""
    if importlib.util.find_spec("setuptools") is None:
        return "setuptools is not installed in this environment"
    import setuptools

    major, minor = (int(v) for v in setuptools.__version__.split(".")[:2])
    if (major, minor) < (70, 1) and importlib.util.find_spec("wheel") is None:  # bdist_wheel moved into setuptools
        return f"setuptools {setuptools.__version__} needs the 'wheel' package to build wheels"
    return None


def _run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
def test_the_cli_works_from_an_installed_wheel(tmp_path):
    reason = _can_build_offline()
    if reason:
        pytest.skip(f"cannot build the wheel offline: {reason}")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "fsslab", source / "fsslab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  "--quiet", "-w", str(tmp_path / "dist"), str(source)], tmp_path, env)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("fsslab-*.whl")

    venv = tmp_path / "venv"
    created = _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], tmp_path,
                   env)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    installed = _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                      "--quiet", str(wheel)], tmp_path, env)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # this environment's packages (torch, numpy, ...) for the new one, after its own site-packages: a venv made
    # from a venv's python only sees the base interpreter's packages. Its .pth files are not processed, so the
    # checkout's editable fsslab stays out of reach.
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path,
                        env).stdout.strip())
    parent = {sysconfig.get_path("purelib"), *site.getsitepackages()}
    (purelib / "_fsslab_test_parent_env.pth").write_text("\n".join(sorted(parent)) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    fsslab = str(venv / "bin" / "fsslab")
    where = _run([str(python), "-c", "import fsslab, fsslab.zoo as z; print(fsslab.__file__); print(z.CHECKPOINT_DIR)"],
                 work, env)
    module_file, checkpoint_dir = where.stdout.split()
    assert Path(module_file).is_relative_to(venv), where.stdout + where.stderr
    assert Path(checkpoint_dir).is_relative_to(venv)

    commands = _subcommands()
    expected = {("data", "synth"), ("data", "lists"), ("data", "pascal"), ("data", "coco"), ("bench",),
                ("predict",), ("zoo", "list"), ("train",), ("eval",)}
    assert expected <= {tuple(c) for c in commands}
    # every `fsslab <command> --help` in one process of the installed package (each fsslab process imports
    # torch, seconds on a busy CPU); the console script itself runs `data synth`, `zoo list` and `config` below
    shown = _run([str(python), "-c", HELP_SCRIPT, json.dumps([[], *commands])], work, env)
    assert shown.returncode == 0, shown.stderr[-3000:]
    results = json.loads(shown.stdout.splitlines()[-1])
    for command, (code, usage) in zip([[], *commands], results, strict=True):
        assert code == 0 and usage.startswith(f"usage: fsslab {' '.join(command)}".rstrip()), (command, code, usage)

    synth = _run([fsslab, "data", "synth", "--root", str(work / "synthetic"), "--n-train", "2", "--n-val", "2",
                  "--n-pretrain", "0", "--workers", "1", "--no-progress", "min_size=16", "max_size=16"], work, env)
    assert synth.returncode == 0, synth.stderr[-2000:]
    assert json.loads(synth.stdout[synth.stdout.index("{"):])["root"] == str(work / "synthetic")
    assert (work / "synthetic" / "meta.json").is_file() and len(list((work / "synthetic" / "JPEGImages").iterdir())) == 4

    listing = _run([fsslab, "zoo", "list"], work, env)
    assert listing.returncode == 0, listing.stderr[-2000:]
    assert "ipmt_tiny_fold0_1shot" in listing.stdout and "baseline_tiny_fold0_1shot" in listing.stdout
    configs = _run([fsslab, "config", "synthetic/ipmt_tiny"], work, env)  # shipped configs are package data
    assert configs.returncode == 0 and "name: ipmt_tiny" in configs.stdout, configs.stderr[-2000:]

"""The built wheel installs exactly one top-level package, ``natsflow``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _tracked() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO, check=True, capture_output=True, text=True
    )
    return [name for name in listing.stdout.split("\0") if name]


def _build(tmp: Path) -> Path:
    """Build from a copy of the tracked files: no stale build/ directory can leak in."""
    source = tmp / "source"
    for name in _tracked():
        origin, target = REPO / name, source / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if origin.is_symlink():
            target.symlink_to(os.readlink(origin))
        elif origin.is_file():  # not a file deleted in the work tree and not yet in git
            shutil.copy2(origin, target)
    out = tmp / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("natsflow-*.whl")
    return wheel


def _package_sources() -> set[str]:
    """``natsflow/...py``: every tracked module of the package."""
    return {
        name
        for name in _tracked()
        if name.startswith("natsflow/") and name.endswith(".py") and (REPO / name).is_file()
    }


def test_the_wheel_holds_only_natsflow_and_imports_from_a_clean_path(tmp_path: Path) -> None:
    wheel = _build(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    assert {n for n in names if n.endswith(".py")} == _package_sources()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"natsflow"}
    for expected in (
        "natsflow/manifests/examples/hello.yaml",
        "natsflow/service/grafana/natsflow-dashboard.json",
        "natsflow/service/schemas/result.json",
    ):
        assert expected in names

    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    probe = (
        "import importlib.util, natsflow, natsflow.service.cli;"
        "print(natsflow.__file__);"
        "print([m for m in ('service', 'events', 'actors', 'manifests')"
        " if importlib.util.find_spec(m) is not None])"
    )
    # From an empty directory, with the installed copy first on the path: the
    # repository's own folders are not importable, only the wheel's package.
    run = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    where, strays = run.stdout.splitlines()
    assert where.startswith(str(target))
    assert strays == "[]"

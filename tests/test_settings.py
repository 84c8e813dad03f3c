"""Settings: the contract's defaults, the environment and `.env`, production checks.

Defaults are checked with every setting removed from the environment and the
working directory moved to an empty folder, as on a fresh machine. The start-up
refusals are checked on the real commands, in processes of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from engine.startup import StartupError
from engine.settings import load_settings
from graph.settings import Settings
from tests.support import ROOT

# CONTRACT.md §6 (settings) and §5 (limits): variable -> default, as a user reads them.
CONTRACT_DEFAULTS = {
    "MONGO_URI": None,              # unset: the in-memory store
    "MONGO_DB": "queue",
    "REDIS_URL": None,              # unset: an embedded Redis
    "JWT_SECRET": None,             # unset: a random one per process
    "JWT_TTL_SECONDS": 3600,
    "HOST": "127.0.0.1",
    "PORT": 8000,
    "QUEUE_HANDLER": "workers.handlers:echo",
    "QUEUE_CONCURRENCY": 10,
    "QUEUE_MAX_ATTEMPTS": 3,
    "QUEUE_RETRY_BASE_SECONDS": 1.0,
    "QUEUE_JOB_TIMEOUT_SECONDS": 30,
    "QUEUE_LEASE_SECONDS": 30,
    "QUEUE_MAX_PAYLOAD_BYTES": 65536,
    "QUEUE_MAX_PENDING": 10000,
    "QUEUE_MAX_BATCH": 1000,
    "APP_ENV": "development",
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "console",
    # §5 limits
    "GRAPHQL_MAX_DEPTH": 15,
    "GRAPHQL_MAX_ALIASES": 30,
    "GRAPHQL_MAX_TOKENS": 5000,
    "HTTP_MAX_BODY_BYTES": 1024 * 1024,
    "LOGIN_MAX_FAILURES": 10,
    "LOGIN_WINDOW_SECONDS": 15 * 60,
    "GRAPHQL_INTROSPECTION": True,
}

# A value for each variable that differs from its default, as text in the environment.
NON_DEFAULTS = {
    "MONGO_URI": ("mongodb://db.example:27017", "mongodb://db.example:27017"),
    "MONGO_DB": ("jobs_here", "jobs_here"),
    "REDIS_URL": ("redis://cache.example:6379/2", "redis://cache.example:6379/2"),
    "JWT_SECRET": ("s" * 40, "s" * 40),
    "JWT_TTL_SECONDS": ("60", 60),
    "HOST": ("0.0.0.0", "0.0.0.0"),
    "PORT": ("9001", 9001),
    "QUEUE_HANDLER": ("mypkg.jobs:run", "mypkg.jobs:run"),
    "QUEUE_CONCURRENCY": ("4", 4),
    "QUEUE_MAX_ATTEMPTS": ("7", 7),
    "QUEUE_RETRY_BASE_SECONDS": ("0.25", 0.25),
    "QUEUE_JOB_TIMEOUT_SECONDS": ("2.5", 2.5),
    "QUEUE_LEASE_SECONDS": ("12", 12),
    "QUEUE_MAX_PAYLOAD_BYTES": ("1024", 1024),
    "QUEUE_MAX_PENDING": ("5", 5),
    "QUEUE_MAX_BATCH": ("50", 50),
    "APP_ENV": ("test", "test"),
    "LOG_LEVEL": ("DEBUG", "DEBUG"),
    "LOG_FORMAT": ("json", "json"),
    "GRAPHQL_MAX_DEPTH": ("8", 8),
    "GRAPHQL_MAX_ALIASES": ("3", 3),
    "GRAPHQL_MAX_TOKENS": ("900", 900),
    "HTTP_MAX_BODY_BYTES": ("4096", 4096),
    "LOGIN_MAX_FAILURES": ("2", 2),
    "LOGIN_WINDOW_SECONDS": ("60", 60),
    "GRAPHQL_INTROSPECTION": ("false", False),
}

SETTING_NAMES = {name.upper() for name in Settings.model_fields}


def clean_environ() -> dict:
    """This process's environment without any of the service's settings."""
    return {k: v for k, v in os.environ.items() if k.upper() not in SETTING_NAMES}


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """No setting in the environment, and an empty working directory (no `.env`)."""
    for key in list(os.environ):
        if key.upper() in SETTING_NAMES:
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def value_of(settings: Settings, variable: str):
    return getattr(settings, variable.lower())


# ---------------------------------------------------------------- defaults


def test_every_contract_variable_is_a_setting():
    assert set(CONTRACT_DEFAULTS) <= SETTING_NAMES
    assert set(NON_DEFAULTS) == set(CONTRACT_DEFAULTS)


@pytest.mark.parametrize("variable", sorted(CONTRACT_DEFAULTS))
def test_each_variable_has_its_contract_default(fresh, variable):
    expected = CONTRACT_DEFAULTS[variable]
    actual = value_of(Settings(), variable)
    assert actual == expected, f"{variable}: {actual!r}, the contract says {expected!r}"
    if isinstance(expected, bool) or expected is None:
        assert actual is expected


def test_the_defaults_serve_graphiql_in_development(fresh):
    settings = Settings()
    assert not settings.production
    assert settings.graphiql_enabled


# ---------------------------------------------------------------- sources


@pytest.mark.parametrize("variable", sorted(NON_DEFAULTS))
def test_each_variable_is_read_from_the_environment(fresh, monkeypatch, variable):
    text, expected = NON_DEFAULTS[variable]
    monkeypatch.setenv(variable, text)
    assert value_of(Settings(), variable) == expected


def test_variable_names_are_case_insensitive(fresh, monkeypatch):
    monkeypatch.setenv("queue_max_batch", "77")
    assert Settings().queue_max_batch == 77


def test_dot_env_in_the_working_directory_is_read(fresh):
    lines = [f"{var}={text}" for var, (text, _) in NON_DEFAULTS.items()]
    (fresh / ".env").write_text("# a comment\n" + "\n".join(lines) + "\n")
    settings = Settings()
    for variable, (_, expected) in NON_DEFAULTS.items():
        assert value_of(settings, variable) == expected, variable


def test_the_environment_wins_over_dot_env(fresh, monkeypatch):
    (fresh / ".env").write_text("QUEUE_MAX_BATCH=5\nMONGO_DB=from_file\n")
    monkeypatch.setenv("QUEUE_MAX_BATCH", "6")
    settings = Settings()
    assert settings.queue_max_batch == 6
    assert settings.mongo_db == "from_file"


def test_dot_env_elsewhere_is_not_read(fresh):
    elsewhere = fresh / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".env").write_text("MONGO_DB=not_this_one\n")
    assert Settings().mongo_db == "queue"


def test_bad_values_are_refused_with_the_variable_named(fresh, monkeypatch):
    monkeypatch.setenv("QUEUE_CONCURRENCY", "lots")
    with pytest.raises(StartupError) as info:
        load_settings(Settings)
    message = str(info.value)
    assert "QUEUE_CONCURRENCY" in message and "\n" not in message


# ---------------------------------------------------------------- production


@pytest.mark.parametrize("secret", [None, "", "x" * 31, "é" * 15])
def test_production_refuses_a_missing_or_short_jwt_secret(fresh, monkeypatch, secret):
    monkeypatch.setenv("APP_ENV", "production")
    if secret is not None:
        monkeypatch.setenv("JWT_SECRET", secret)
    with pytest.raises(StartupError) as info:
        load_settings(Settings)
    message = str(info.value)
    assert "JWT_SECRET" in message
    assert "\n" not in message


@pytest.mark.parametrize("secret", ["x" * 32, "é" * 16, "k" * 200])
def test_production_accepts_a_secret_of_32_bytes_or_more(fresh, monkeypatch, secret):
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", secret)
    settings = load_settings(Settings)
    assert settings.production and settings.jwt_secret == secret
    assert not settings.graphiql_enabled


@pytest.mark.parametrize("secret", [None, "x" * 31])
def test_development_takes_any_secret(fresh, monkeypatch, secret):
    if secret is not None:
        monkeypatch.setenv("JWT_SECRET", secret)
    assert load_settings(Settings).jwt_secret == secret


def run_command(module: str, cwd, env_extra: dict) -> subprocess.CompletedProcess:
    env = clean_environ()
    env.update(env_extra)
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", module], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


def assert_refused_naming_jwt_secret(result: subprocess.CompletedProcess) -> None:
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    lines = [line for line in output.splitlines() if "JWT_SECRET" in line]
    assert lines, f"no line names JWT_SECRET:\n{output}"
    assert "Traceback" not in output, output


@pytest.mark.parametrize("module", ["graph", "workers"])
@pytest.mark.parametrize("secret", [None, "too-short"])
def test_production_start_is_refused_without_a_good_secret(tmp_path, module, secret):
    env = {"APP_ENV": "production"}
    if secret is not None:
        env["JWT_SECRET"] = secret
    assert_refused_naming_jwt_secret(run_command(module, tmp_path, env))


@pytest.mark.parametrize("module", ["graph", "workers"])
def test_production_from_dot_env_is_refused_without_a_good_secret(tmp_path, module):
    (tmp_path / ".env").write_text("APP_ENV=production\nJWT_SECRET=short\n")
    assert_refused_naming_jwt_secret(run_command(module, tmp_path, {}))


def test_a_worker_reads_the_shared_settings_only(fresh, monkeypatch):
    """API-only settings (MongoDB, HTTP, GraphQL limits) are neither loaded nor
    validated by a worker: a typo in one stops the API, not the workers."""
    from engine.settings import QueueSettings

    monkeypatch.setenv("GRAPHQL_MAX_DEPTH", "lots")
    monkeypatch.setenv("QUEUE_CONCURRENCY", "7")
    worker = load_settings(QueueSettings)
    assert worker.queue_concurrency == 7 and not hasattr(worker, "graphql_max_depth")
    with pytest.raises(StartupError, match="GRAPHQL_MAX_DEPTH"):
        load_settings(Settings)

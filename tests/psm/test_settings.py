"""Settings come from the environment; a bad value stops start-up naming the variable."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env():
    """The settings module, whose env helpers read os.environ when called."""
    return importlib.import_module("psm.settings")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("TRUE", True), (" True ", True), ("false", False), ("False", False)],
)
def test_envbool_accepts_true_and_false_in_any_case(env, monkeypatch, value, expected):
    monkeypatch.setenv("PSM_TEST_FLAG", value)
    assert env.envbool("PSM_TEST_FLAG", not expected) is expected


@pytest.mark.parametrize("default", [True, False])
def test_envbool_unset_or_empty_gives_the_default(env, monkeypatch, default):
    monkeypatch.delenv("PSM_TEST_FLAG", raising=False)
    assert env.envbool("PSM_TEST_FLAG", default) is default
    monkeypatch.setenv("PSM_TEST_FLAG", "  ")
    assert env.envbool("PSM_TEST_FLAG", default) is default


@pytest.mark.parametrize("value", ["maybe", "on", "2", "yes", "1", "0"])
def test_envbool_rejects_anything_but_true_or_false(env, monkeypatch, value):
    monkeypatch.setenv("PSM_TEST_FLAG", value)
    with pytest.raises(ImproperlyConfigured, match="PSM_TEST_FLAG must be true or false"):
        env.envbool("PSM_TEST_FLAG", False)


def test_envint_reads_an_integer_or_the_default(env, monkeypatch):
    monkeypatch.delenv("PSM_TEST_INT", raising=False)
    assert env.envint("PSM_TEST_INT", 7) == 7
    monkeypatch.setenv("PSM_TEST_INT", " 42 ")
    assert env.envint("PSM_TEST_INT", 7) == 42


def test_envint_rejects_a_non_integer(env, monkeypatch):
    monkeypatch.setenv("PSM_TEST_INT", "ten")
    with pytest.raises(ImproperlyConfigured, match="PSM_TEST_INT must be an integer, not 'ten'"):
        env.envint("PSM_TEST_INT", 7)


def test_envint_rejects_a_value_below_the_minimum(env, monkeypatch):
    monkeypatch.setenv("PSM_TEST_INT", "-1")
    with pytest.raises(ImproperlyConfigured, match="PSM_TEST_INT must be at least 0"):
        env.envint("PSM_TEST_INT", 7)
    monkeypatch.setenv("PSM_TEST_INT", "59")
    with pytest.raises(ImproperlyConfigured, match="PSM_TEST_INT must be at least 60"):
        env.envint("PSM_TEST_INT", 900, minimum=60)


def test_envsecret_reads_the_variable(env, monkeypatch):
    monkeypatch.delenv("PSM_TEST_SECRET_FILE", raising=False)
    monkeypatch.setenv("PSM_TEST_SECRET", "hunter2")
    assert env.envsecret("PSM_TEST_SECRET") == "hunter2"
    monkeypatch.delenv("PSM_TEST_SECRET")
    assert env.envsecret("PSM_TEST_SECRET", "fallback") == "fallback"


def test_envsecret_prefers_the_file_named_by_name_file(env, monkeypatch, tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    monkeypatch.setenv("PSM_TEST_SECRET", "from-env")
    monkeypatch.setenv("PSM_TEST_SECRET_FILE", str(secret))
    assert env.envsecret("PSM_TEST_SECRET") == "from-file"


def test_envsecret_unreadable_file_names_the_variable(env, monkeypatch, tmp_path):
    monkeypatch.setenv("PSM_TEST_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="PSM_TEST_SECRET_FILE: cannot read"):
        env.envsecret("PSM_TEST_SECRET")


def test_envlist_splits_on_commas_and_drops_blanks(env, monkeypatch):
    monkeypatch.setenv("PSM_TEST_LIST", " a.example , b.example,,  ")
    assert env.envlist("PSM_TEST_LIST", ["default"]) == ["a.example", "b.example"]


def test_envlist_unset_gives_the_default_and_empty_gives_nothing(env, monkeypatch):
    monkeypatch.delenv("PSM_TEST_LIST", raising=False)
    assert env.envlist("PSM_TEST_LIST", ["default"]) == ["default"]
    monkeypatch.setenv("PSM_TEST_LIST", "")
    assert env.envlist("PSM_TEST_LIST", ["default"]) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("mirror.corp, 10.0.0.0/8", ["mirror.corp", "10.0.0.0/8"]),  # replaces the default
        ("+mirror.corp, 10.0.0.0/8", ["default", "mirror.corp", "10.0.0.0/8"]),  # adds to it
        (" +", ["default"]),
    ],
)
def test_an_extendable_list_is_replaced_or_extended_with_a_leading_plus(
    env, monkeypatch, value, expected
):
    monkeypatch.setenv("PSM_TEST_LIST", value)
    assert env.envlist("PSM_TEST_LIST", ["default"], extendable=True) == expected


def _manage_check(tmp_path, **variables):
    environment = {**os.environ, "PSM_DATA_DIR": str(tmp_path), **variables}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "PSM_DEBUG"):
        if name not in variables:
            environment.pop(name, None)
    environment["DJANGO_SETTINGS_MODULE"] = "psm.settings"
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_URL", "nonsense://x"),
        ("CELERY_BROKER_URL", "ftp://x"),
        ("PSM_DEBUG", "maybe"),
        ("PSM_HTTP_TIMEOUT", "0"),
        ("PSM_OIDC_ROLE_MAP", '{"/team-a": ["group:Channels: Manage"]}'),
    ],
)
def test_start_up_fails_naming_the_badly_set_variable(tmp_path, name, value):
    result = _manage_check(tmp_path, **{name: value})
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert name in result.stderr


def test_start_up_with_defaults_passes_the_system_check(tmp_path):
    result = _manage_check(tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_the_upstream_allowlist_takes_a_leading_plus_to_extend_its_default(tmp_path):
    probe = "from django.conf import settings as s; print(','.join(s.PSM_UPSTREAM_ALLOWLIST))"
    environment = {**os.environ, "PSM_DATA_DIR": str(tmp_path)}
    environment |= {"DJANGO_SETTINGS_MODULE": "psm.settings", "PSM_UPSTREAM_ALLOWLIST": "+corp"}
    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {probe}"],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    listed = result.stdout.strip().split(",")
    assert listed[0] == "conda.anaconda.org" and "pypi.org" in listed and listed[-1] == "corp"

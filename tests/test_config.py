"""config.yaml (hyperrun/config.py) and registry credentials (hyperrun/credentials.py)."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from hyperrun import config
from hyperrun.config import Config, RegistryConfig
from hyperrun.errors import UsageError
from hyperrun.registry import credentials
from hyperrun.registry.credentials import Credentials


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("XDG_CONFIG_HOME", "HYPERRUN_CONFIG", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_missing_file_is_empty_config(home: Path) -> None:
    assert config.load() == Config()


def test_full_config(home: Path) -> None:
    path = home / ".config/hyperrun/config.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("""
run:
  cpus: 2
  memory: 1g
registries:
  docker.io:
    mirrors: [https://mirror.example.com/]
  registry.example.com:5000:
    insecure: true
    ca: ~/ca.pem
""")
    cfg = config.load()
    assert (cfg.cpus, cfg.memory) == ("2", "1g")
    assert cfg.registry("docker.io").mirrors == ("https://mirror.example.com",)
    assert cfg.registry("registry.example.com:5000") == RegistryConfig(
        (), True, home / "ca.pem")


def test_hyperrun_config_variable(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = home / "elsewhere.yaml"
    path.write_text("run: {memory: 256m}\n")
    monkeypatch.setenv("HYPERRUN_CONFIG", str(path))
    assert config.load().memory == "256m"


@pytest.mark.parametrize("host", ["127.0.0.1:5000", "127.1.2.3", "[::1]:5000", "::1",
                                  "localhost:5000"])
def test_loopback_is_insecure_by_default(host: str) -> None:
    assert Config().registry(host).insecure


@pytest.mark.parametrize("host", ["docker.io", "10.0.0.1:5000", "registry.example.com"])
def test_others_are_secure_by_default(host: str) -> None:
    assert not Config().registry(host).insecure


@pytest.mark.parametrize(("text", "words"), [
    ("run: [1]", "run must be a mapping"),
    ("colour: red", "unknown setting 'colour'"),
    ("run: {cpu: 2}", "unknown setting 'cpu'"),
    ("registries: {x: {insecure: maybe}}", "insecure must be true or false"),
    ("registries: {x: {mirrors: https://m}}", "mirrors must be a list"),
    ("run: {cpus: [", "invalid YAML"),
])
def test_bad_config_is_an_error(home: Path, text: str, words: str) -> None:
    path = home / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UsageError, match=words.replace("[", r"\[")):
        config.load(path)


# ---- credentials ------------------------------------------------------------------------


def test_login_writes_our_file_only(home: Path) -> None:
    path = credentials.save("registry.example.com", Credentials("me", "pw:with:colons"))
    assert path == home / ".config/hyperrun/auth.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not (home / ".docker").exists()
    assert credentials.lookup("registry.example.com") == Credentials("me", "pw:with:colons")
    assert credentials.remove("https://registry.example.com/v2/")
    assert not credentials.remove("registry.example.com")
    assert credentials.lookup("registry.example.com") is None


def test_docker_config_is_read(home: Path) -> None:
    docker = home / ".docker/config.json"
    docker.parent.mkdir()
    auth = base64.b64encode(b"hub-user:hub-pass").decode()
    docker.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": auth},
        "http://127.0.0.1:5000": {"username": "u", "password": "p"},
    }, "credsStore": "desktop"}))
    before = docker.read_bytes()
    assert credentials.lookup("docker.io") == Credentials("hub-user", "hub-pass")
    assert credentials.lookup("127.0.0.1:5000") == Credentials("u", "p")
    # ours wins over docker's, and docker's file is never touched
    credentials.save("docker.io", Credentials("mine", "x"))
    assert credentials.lookup("docker.io") == Credentials("mine", "x")
    assert credentials.remove("docker.io")
    assert credentials.lookup("docker.io") == Credentials("hub-user", "hub-pass")
    assert docker.read_bytes() == before


def test_credentials_never_print_the_password() -> None:
    assert "secret" not in repr(Credentials("me", "secret"))


def test_corrupt_auth_file(home: Path) -> None:
    path = home / ".config/hyperrun/auth.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"auths": {"h": {"auth": "bm9jb2xvbg=="}}}))  # "nocolon"
    with pytest.raises(UsageError, match="not base64 of user:password"):
        credentials.lookup("h")

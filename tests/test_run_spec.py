"""How `hyperrun run` options and the image config combine (docker's rules)."""

from __future__ import annotations

import pytest

from hyperrun.cli import build_parser
from hyperrun.cli import run as cli_run
from hyperrun.cli.run import parse_cpus, parse_memory
from hyperrun.containers.run import check_exec_size, process_spec
from hyperrun.errors import UsageError
from hyperrun.images.model import ImageConfig
from hyperrun.spec import ProcessSpec

CONFIG = ImageConfig(
    entrypoint=("/entry.sh",),
    cmd=("serve", "--port", "80"),
    env=("PATH=/opt/bin:/bin", "MODE=image"),
    working_dir="/srv",
    user="app",
)


def _spec(*argv: str, config: ImageConfig = CONFIG):
    args = build_parser().parse_args(["run", *argv])
    return process_spec(config, cli_run.to_spec(args), hostname="h1")


def test_image_config_is_the_default() -> None:
    p = _spec("img")
    assert p.args == ("/entry.sh", "serve", "--port", "80")
    assert p.cwd == "/srv" and p.user == "app"
    assert "PATH=/opt/bin:/bin" in p.env and "MODE=image" in p.env
    assert "HOSTNAME=h1" in p.env


def test_command_replaces_cmd_but_keeps_entrypoint() -> None:
    assert _spec("img", "status", "-v").args == ("/entry.sh", "status", "-v")


def test_entrypoint_flag_drops_image_cmd() -> None:
    assert _spec("--entrypoint", "/bin/sh", "img").args == ("/bin/sh",)
    assert _spec("--entrypoint", "/bin/sh", "img", "-c", "true").args == ("/bin/sh", "-c", "true")


def test_empty_entrypoint_runs_command_alone() -> None:
    assert _spec("--entrypoint", "", "img", "ls").args == ("ls",)


def test_flags_override_env_workdir_user(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("FROM_HOST", "yes")
    monkeypatch.delenv("UNSET_ON_HOST", raising=False)
    env_file = tmp_path / "env"
    env_file.write_text("# comment\nMODE=file\nEXTRA=1\n")
    p = _spec("--env-file", str(env_file), "-e", "MODE=flag", "-e", "FROM_HOST",
              "-e", "UNSET_ON_HOST", "-w", "/tmp", "-u", "1000:1000", "img")
    assert "MODE=flag" in p.env and "MODE=image" not in p.env and "MODE=file" not in p.env
    assert "EXTRA=1" in p.env and "FROM_HOST=yes" in p.env
    assert not any(e.startswith("UNSET_ON_HOST") for e in p.env)
    assert p.cwd == "/tmp" and p.user == "1000:1000"


def test_default_path_when_image_has_none() -> None:
    p = _spec("img", "true", config=ImageConfig())
    assert any(e.startswith("PATH=/usr/local/sbin:") for e in p.env)
    assert p.cwd == "/" and p.user == ""


def test_tty_sets_term() -> None:
    assert "TERM=xterm" in _spec("-t", "img").env
    assert not any(e.startswith("TERM=") for e in _spec("img").env)


def test_no_command_is_an_error() -> None:
    with pytest.raises(UsageError, match="no command"):
        _spec("img", config=ImageConfig())


@pytest.mark.parametrize(("text", "mib"), [("256m", 256), ("1g", 1024), ("1G", 1024),
                                           ("524288k", 512), ("268435456", 256), ("512MiB", 512)])
def test_parse_memory(text: str, mib: int) -> None:
    assert parse_memory(text) == mib


@pytest.mark.parametrize("text", ["", "abc", "12q", "-5m", "1m", "100000g", "nan", "inf",
                                  "-inf", "1e400", "-1g", "1e3m", "0x10g", "٥١٢m", "9" * 400])
def test_parse_memory_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_memory(text)


@pytest.mark.parametrize("text", ["0", "1.5", "x", "-1", "65", "nan", "inf", "1e400", "1e1",
                                  "٢"])
def test_parse_cpus_rejects(text: str) -> None:
    with pytest.raises(UsageError):
        parse_cpus(text)


def test_parse_cpus() -> None:
    assert parse_cpus("2") == 2 and parse_cpus("4.0") == 4 and parse_cpus("64") == 64


def test_oversized_exec_is_refused_before_boot() -> None:
    """The EXEC message must fit in one control frame (CTL_MAX), checked on the host."""
    ok = _spec("-e", "A=" + "a" * 1000, "img")
    check_exec_size(ok)
    big = ProcessSpec(args=("sh",), env=tuple(f"K{i}={'v' * 1000}" for i in range(1100)))
    with pytest.raises(UsageError, match="the guest accepts at most 1048576 bytes"):
        check_exec_size(big)
    with pytest.raises(UsageError, match="NUL"):
        check_exec_size(ProcessSpec(args=("sh", "a\0b")))

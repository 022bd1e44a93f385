"""Unit tests for rsub.wire.paths: XDG locations and the private directory check."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from rsub.wire import paths

pytestmark = pytest.mark.usefixtures("clean_env")


# -- config_file -----------------------------------------------------------


def test_config_file_is_none_when_there_is_none() -> None:
    assert paths.config_file() is None


def test_config_file_explicit_is_returned_even_if_missing(tmp_path: Path) -> None:
    assert paths.config_file(str(tmp_path / "missing.toml")) == tmp_path / "missing.toml"


def test_config_file_explicit_expands_tilde(clean_env: Path) -> None:
    assert paths.config_file("~/c.toml") == clean_env / "c.toml"


def test_config_file_empty_explicit_falls_through(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RSUB_CONFIG", str(tmp_path / "env.toml"))
    assert paths.config_file("") == tmp_path / "env.toml"


def test_config_file_env_is_returned_even_if_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RSUB_CONFIG", str(tmp_path / "env.toml"))
    assert paths.config_file() == tmp_path / "env.toml"
    assert paths.config_file(str(tmp_path / "x.toml")) == tmp_path / "x.toml"


def test_config_file_from_xdg_only_when_it_exists(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert paths.config_file() is None
    target = tmp_path / "xdg" / "rsub" / "config.toml"
    target.parent.mkdir(parents=True)
    target.write_text("")
    assert paths.config_file() == target


def test_config_file_defaults_to_home_dot_config(clean_env: Path) -> None:
    target = clean_env / ".config" / "rsub" / "config.toml"
    target.parent.mkdir(parents=True)
    target.write_text("")
    assert paths.config_file() == target


def test_relative_xdg_config_home_is_ignored(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # The XDG spec: a relative path in these variables is invalid and must be ignored.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel" / "rsub").mkdir(parents=True)
    (tmp_path / "rel" / "rsub" / "config.toml").write_text("")
    monkeypatch.setenv("XDG_CONFIG_HOME", "rel")
    assert paths.config_file() is None


# -- state and runtime -----------------------------------------------------


def test_state_dir_from_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "st"))
    assert paths.state_dir() == tmp_path / "st" / "rsub"


@pytest.mark.parametrize("value", [None, "", "relative/state"])
def test_state_dir_default(clean_env: Path, monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is not None:
        monkeypatch.setenv("XDG_STATE_HOME", value)
    assert paths.state_dir() == clean_env / ".local" / "state" / "rsub"


def test_runtime_dir_from_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert paths.runtime_dir() == tmp_path / "rsub"


@pytest.mark.parametrize("value", [None, "", "run"])
def test_runtime_dir_fallback_is_per_uid(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is not None:
        monkeypatch.setenv("XDG_RUNTIME_DIR", value)
    assert paths.runtime_dir() == Path(f"/tmp/rsub-{os.getuid()}")


def test_socket_path_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clean_env: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    assert paths.socket_path() == tmp_path / "rsub" / "rsubd.sock"
    monkeypatch.setenv("RSUB_SOCKET", "~/env.sock")
    assert paths.socket_path() == clean_env / "env.sock"
    assert paths.socket_path("~/x.sock") == clean_env / "x.sock"
    assert paths.socket_path("") == clean_env / "env.sock"


# -- ensure_private_dir ----------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ensure_private_dir_creates_0700_with_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "c"
    paths.ensure_private_dir(target)
    assert target.is_dir()
    assert mode(target) == 0o700


def test_ensure_private_dir_tightens_an_open_dir(tmp_path: Path) -> None:
    target = tmp_path / "open"
    target.mkdir()
    target.chmod(0o755)
    (target / "keep").write_text("x")
    paths.ensure_private_dir(target)
    assert mode(target) == 0o700
    assert (target / "keep").read_text() == "x"


def test_ensure_private_dir_is_idempotent(tmp_path: Path) -> None:
    paths.ensure_private_dir(tmp_path / "d")
    paths.ensure_private_dir(tmp_path / "d")
    assert mode(tmp_path / "d") == 0o700


def test_ensure_private_dir_refuses_another_users_dir(tmp_path: Path) -> None:
    if os.getuid() == 0:
        target = tmp_path / "theirs"
        target.mkdir(mode=0o755)
        os.chown(target, 65534, 65534)
    else:
        target = Path("/")  # owned by root, never by a test user
    before = mode(target)
    with pytest.raises(PermissionError, match="belongs to uid"):
        paths.ensure_private_dir(target)
    assert mode(target) == before


def test_ensure_private_dir_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(FileExistsError):
        paths.ensure_private_dir(target)

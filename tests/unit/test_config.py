"""Unit tests for rsubd.config: defaults, where the file is found, and every refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rsubd import config
from rsubd.config import Config, ConfigError

REPO = Path(__file__).resolve().parents[2]


pytestmark = pytest.mark.usefixtures("clean_env")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def refusal(tmp_path: Path, text: str) -> str:
    """The message of the ConfigError that loading `text` raises."""
    path = write(tmp_path / "refused.toml", text)
    with pytest.raises(ConfigError) as info:
        config.load(str(path))
    return str(info.value)


# -- defaults --------------------------------------------------------------


def test_no_file_gives_one_local_schedd(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    cfg = config.load()
    assert cfg.source is None
    assert [(s.name, s.backend, s.poll_interval) for s in cfg.schedds] == [("local", "local", 2.0)]
    assert cfg.socket == tmp_path / "run" / "rsub" / "rsubd.sock"
    assert cfg.state_dir == tmp_path / "state" / "rsub"
    assert cfg.ledger_path == tmp_path / "state" / "rsub" / "ledger.db"
    assert cfg.log_level == "info"
    assert cfg.leave_in_queue_days == 10.0
    assert cfg.schedd(None).name == "local"
    assert cfg.schedd("local") is cfg.schedds[0]
    with pytest.raises(KeyError):
        cfg.schedd("elsewhere")


def test_without_runtime_dir_the_socket_is_under_tmp(clean_env: Path) -> None:
    cfg = config.load()
    assert cfg.socket == Path(f"/tmp/rsub-{os.getuid()}") / "rsubd.sock"
    assert cfg.state_dir == clean_env / ".local" / "state" / "rsub"


def test_rsub_socket_overrides_the_default_socket(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RSUB_SOCKET", str(tmp_path / "s.sock"))
    assert config.load().socket == tmp_path / "s.sock"


# -- where the file comes from ---------------------------------------------

SOCKET_ONLY = 'socket = "{}"\n'


def test_explicit_path_wins_over_env_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    explicit = write(tmp_path / "explicit.toml", SOCKET_ONLY.format("/tmp/explicit.sock"))
    env = write(tmp_path / "env.toml", SOCKET_ONLY.format("/tmp/env.sock"))
    write(tmp_path / "xdg" / "rsub" / "config.toml", SOCKET_ONLY.format("/tmp/xdg.sock"))
    monkeypatch.setenv("RSUB_CONFIG", str(env))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    cfg = config.load(str(explicit))
    assert cfg.source == explicit
    assert cfg.socket == Path("/tmp/explicit.sock")


def test_rsub_config_wins_over_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = write(tmp_path / "env.toml", SOCKET_ONLY.format("/tmp/env.sock"))
    write(tmp_path / "xdg" / "rsub" / "config.toml", SOCKET_ONLY.format("/tmp/xdg.sock"))
    monkeypatch.setenv("RSUB_CONFIG", str(env))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    cfg = config.load()
    assert cfg.source == env
    assert cfg.socket == Path("/tmp/env.sock")


def test_xdg_config_home_file_is_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    xdg = write(tmp_path / "xdg" / "rsub" / "config.toml", SOCKET_ONLY.format("/tmp/xdg.sock"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    cfg = config.load()
    assert cfg.source == xdg
    assert cfg.socket == Path("/tmp/xdg.sock")


def test_home_config_is_the_xdg_fallback(clean_env: Path) -> None:
    path = write(clean_env / ".config" / "rsub" / "config.toml", 'log_level = "debug"\n')
    cfg = config.load()
    assert cfg.source == path
    assert cfg.log_level == "debug"


def test_a_full_file_is_read(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.toml",
        f"""
socket = "{tmp_path}/r.sock"
state_dir = "{tmp_path}/state"
log_level = "warning"
leave_in_queue_days = 2

[[schedd]]
name = "fast"
poll_interval = 0.5
slots = 3

[[schedd]]
name = "slow.box_2"
backend = "local"
""",
    )
    cfg = config.load(str(path))
    assert cfg == Config(
        socket=tmp_path / "r.sock",
        state_dir=tmp_path / "state",
        log_level="warning",
        leave_in_queue_days=2.0,
        schedds=(
            config.ScheddConfig(name="fast", backend="local", poll_interval=0.5, slots=3, early_poll_every=0.5),
            config.ScheddConfig(name="slow.box_2", backend="local", poll_interval=2.0, early_poll_every=0.5),
        ),
        source=path,
    )
    assert cfg.schedd(None).name == "fast"
    assert cfg.schedd("slow.box_2").slots is None


def test_tilde_in_paths_is_expanded(clean_env: Path, tmp_path: Path) -> None:
    cfg = config.load(str(write(tmp_path / "c.toml", 'socket = "~/s.sock"\nstate_dir = "~/st"\n')))
    assert cfg.socket == clean_env / "s.sock"
    assert cfg.state_dir == clean_env / "st"


def test_example_config_loads() -> None:
    example = REPO / "config.example.toml"  # shipped at the repo root: it must always load
    cfg = config.load(str(example))
    assert cfg.schedds


# -- refusals: each names the key and says what is allowed -----------------


def test_missing_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="does not exist") as info:
        config.load(str(missing))
    assert str(missing) in str(info.value)


def test_missing_file_named_by_rsub_config_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RSUB_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml does not exist"):
        config.load()


def test_directory_as_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.load(str(tmp_path))


def test_bad_toml_is_refused_with_the_line(tmp_path: Path) -> None:
    message = refusal(tmp_path, 'log_level = "info"\nsocket = \n')
    assert "not valid TOML" in message
    assert "line 2" in message
    assert "refused.toml" in message


def test_unknown_top_level_key(tmp_path: Path) -> None:
    message = refusal(tmp_path, "poll_interval = 3\n")
    assert "'poll_interval'" in message
    for key in ("socket", "state_dir", "log_level", "leave_in_queue_days", "schedd"):
        assert key in message


def test_unknown_schedd_key(tmp_path: Path) -> None:
    message = refusal(tmp_path, '[[schedd]]\nname = "a"\nhost = "x"\n')
    assert "[[schedd]] #1" in message
    assert "'host'" in message
    for key in ("name", "backend", "poll_interval", "slots", "pool"):
        assert key in message


def test_unknown_key_in_second_schedd_names_it(tmp_path: Path) -> None:
    message = refusal(tmp_path, '[[schedd]]\nname = "a"\n[[schedd]]\nname = "b"\nslot = 2\n')
    assert "[[schedd]] #2" in message
    assert "'slot'" in message


def test_bad_backend(tmp_path: Path) -> None:
    message = refusal(tmp_path, '[[schedd]]\nname = "a"\nbackend = "slurm"\n')
    assert "backend" in message
    assert "'slurm'" in message
    assert "'local'" in message and "'htcondor'" in message


@pytest.mark.parametrize("value", ["-1", "0", "0.05"])
def test_poll_interval_too_small(tmp_path: Path, value: str) -> None:
    message = refusal(tmp_path, f'[[schedd]]\nname = "a"\npoll_interval = {value}\n')
    assert "poll_interval" in message
    assert ">= 0.1" in message


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_poll_interval_must_be_finite(tmp_path: Path, value: str) -> None:
    message = refusal(tmp_path, f'[[schedd]]\nname = "a"\npoll_interval = {value}\n')
    assert "poll_interval" in message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[schedd]]\nname = "a"\npoll_interval = true\n', "poll_interval"),
        ('[[schedd]]\nname = "a"\npoll_interval = "5"\n', "poll_interval"),
        ("leave_in_queue_days = true\n", "leave_in_queue_days"),
        ("leave_in_queue_days = nan\n", "leave_in_queue_days"),
        ("leave_in_queue_days = -3\n", "leave_in_queue_days"),
    ],
)
def test_numbers_refuse_bools_strings_and_out_of_range(tmp_path: Path, text: str, key: str) -> None:
    message = refusal(tmp_path, text)
    assert key in message
    assert "must be a finite number >=" in message


@pytest.mark.parametrize("value", ["true", "0", "1.5", '"2"'])
def test_slots_must_be_a_whole_number(tmp_path: Path, value: str) -> None:
    message = refusal(tmp_path, f'[[schedd]]\nname = "a"\nslots = {value}\n')
    assert "slots must be a whole number >= 1" in message


@pytest.mark.parametrize("backend", ["local", "htcondor"])
def test_pool_number_is_refused(tmp_path: Path, backend: str) -> None:
    # Refused on either backend: as not a string, or as not applying to "local".
    message = refusal(tmp_path, f'[[schedd]]\nname = "a"\nbackend = "{backend}"\npool = 5\n')
    assert "[[schedd]] #1: " in message
    assert "'pool'" in message or "pool must be a non-empty string" in message


def test_duplicate_schedd_names(tmp_path: Path) -> None:
    message = refusal(tmp_path, '[[schedd]]\nname = "a"\n[[schedd]]\nname = "a"\n')
    assert "'a'" in message
    assert "more than once" in message
    assert "unique" in message


@pytest.mark.parametrize("name", ["a b", "a/b", "x;y"])
def test_schedd_name_characters(tmp_path: Path, name: str) -> None:
    message = refusal(tmp_path, f'[[schedd]]\nname = "{name}"\n')
    assert repr(name) in message
    assert "letters, digits" in message


@pytest.mark.parametrize("body", ['backend = "local"\n', 'name = ""\n', "name = 3\n"])
def test_schedd_needs_a_name(tmp_path: Path, body: str) -> None:
    message = refusal(tmp_path, "[[schedd]]\n" + body)
    assert "[[schedd]] #1: name must be a non-empty string" in message


@pytest.mark.parametrize("text", ["schedd = []\n", '[schedd]\nname = "a"\n', 'schedd = ["a"]\n'])
def test_schedd_must_be_a_list_of_tables(tmp_path: Path, text: str) -> None:
    message = refusal(tmp_path, text)
    assert "schedd" in message
    assert "table" in message


def test_bad_log_level(tmp_path: Path) -> None:
    message = refusal(tmp_path, 'log_level = "verbose"\n')
    assert "log_level" in message and "'verbose'" in message
    for level in ("debug", "info", "warning", "error"):
        assert level in message


@pytest.mark.parametrize("key", ["socket", "state_dir"])
def test_paths_must_be_non_empty_strings(tmp_path: Path, key: str) -> None:
    assert f"{key} must be a non-empty string" in refusal(tmp_path, f'{key} = ""\n')
    assert f"{key} must be a non-empty string" in refusal(tmp_path, f"{key} = 1\n")


def test_too_long_socket_path(tmp_path: Path) -> None:
    message = refusal(tmp_path, f'socket = "/tmp/{"s" * 120}.sock"\n')
    assert "socket path" in message
    assert "too long" in message


def test_notify_and_unspooled_settings() -> None:
    cfg = config.from_dict({"notify": {"command": ["notify-me", "--quiet"], "on": ["held"], "desktop": True},
                            "unspooled": "report"})
    assert cfg.notify.command == ("notify-me", "--quiet") and cfg.notify.on == ("held",) and cfg.notify.desktop
    assert cfg.unspooled == "report"
    for bad, message in (({"notify": {"command": "notify-me $JOB"}}, "no shell is used"),
                         ({"notify": {"on": ["exploded"]}}, "on must be a list of"),
                         ({"unspooled": "ignore"}, "unspooled must be one of")):
        with pytest.raises(config.ConfigError, match=message):
            config.from_dict(bad)


def test_log_keys(tmp_path: Path, clean_env: Path) -> None:
    cfg = config.load(str(write(tmp_path / "c.toml", 'log_file = "~/logs/r.log"\nlog_max_bytes = 65536\n'
                                                     'log_backups = 2\nlog_level = "debug"\n')))
    assert (cfg.log_file, cfg.log_max_bytes, cfg.log_backups, cfg.log_level) == (
        str(clean_env / "logs" / "r.log"), 65536, 2, "debug")
    assert config.load(str(write(tmp_path / "d.toml", 'log_file = "-"\n'))).log_file == "-"
    default = config.load(str(write(tmp_path / "e.toml", "")))
    assert (default.log_file, default.log_max_bytes, default.log_backups) == (None, 10 * 1024 * 1024, 5)
    assert "log_max_bytes must be a whole number >= 4096, not 100" in refusal(tmp_path, "log_max_bytes = 100\n")
    assert "log_backups must be a whole number >= 1, not 0" in refusal(tmp_path, "log_backups = 0\n")
    assert "log_file must be a non-empty string" in refusal(tmp_path, 'log_file = ""\n')
    message = refusal(tmp_path, 'log_level = "loud"\n')
    assert "log_level must be one of debug, info, warning, error, not 'loud'" in message


def test_dagman_path_is_a_per_schedd_key_with_a_default(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", f"""
socket = "{tmp_path}/r.sock"
state_dir = "{tmp_path}/state"
[[schedd]]
name = "here"
[[schedd]]
name = "ap"
backend = "htcondor"
pool = "cm.example.org"
dagman = "/opt/condor/bin/condor_dagman"
""")
    cfg = config.load(str(path))
    assert [s.dagman for s in cfg.schedds] == ["/usr/bin/condor_dagman", "/opt/condor/bin/condor_dagman"]
    write(path, f'socket = "{tmp_path}/r.sock"\n[[schedd]]\nname = "x"\ndagman = "bin/condor_dagman"\n')
    with pytest.raises(ConfigError, match="dagman must be condor_dagman's absolute path"):
        config.load(str(path))

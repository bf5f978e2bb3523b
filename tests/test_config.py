"""Config loading: defaults, expansion, and one-line errors that name file, key and fix."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from clipd.cli import main
from clipd.config import DEFAULT_INCLUDE, load_config
from clipd.errors import ConfigError
from clipd.pgurl import PostgresDatabase


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    config = load_config(write(tmp_path, "roots: [pics]\n"))
    assert config.roots == ((tmp_path / "pics").resolve(),)
    assert config.model.name == "ViT-B-32"
    assert config.model.pretrained == "laion2b_s34b_b79k"
    assert config.include == DEFAULT_INCLUDE
    assert config.batch_size == 16
    assert config.database_file.name == "index.db"
    assert config.socket.name == "clipd.sock"


def test_repo_config_yaml_is_valid_and_documents_every_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "Pictures").mkdir()
    repo_config = Path(__file__).parents[1] / "config.yaml"
    config = load_config(repo_config)
    assert config.roots == ((tmp_path / "Pictures").resolve(),)
    text = repo_config.read_text(encoding="utf-8")
    for key in ("roots", "database", "socket", "model", "name", "pretrained", "device",
                "precision", "batch_size", "loader_threads", "include", "exclude",
                "skip_hidden", "follow_symlinks", "watch", "settle_seconds", "poll_interval",
                "reconcile_interval", "max_image_pixels", "log_level", "web",
                "upload_dir", "host"):  # fmt: skip
        assert f"{key}:" in text, key


def test_tilde_and_variables_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PICS", "photos")
    (tmp_path / "photos").mkdir()
    config = load_config(write(tmp_path, "roots: [~/$PICS]\ndatabase: $HOME/db/x.db\n"))
    assert config.roots == ((tmp_path / "photos").resolve(),)
    assert config.database == tmp_path / "db" / "x.db"


def test_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pics").mkdir()
    path = write(tmp_path, "roots: [pics]\ndatabase: a.db\n")
    monkeypatch.setenv("CLIPD_CONFIG", str(path))
    monkeypatch.setenv("CLIPD_DATABASE", str(tmp_path / "b.db"))
    monkeypatch.setenv("CLIPD_SOCKET", str(tmp_path / "s.sock"))
    config = load_config()
    assert config.source == path
    assert config.database == tmp_path / "b.db"
    assert config.socket == tmp_path / "s.sock"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "roots: [pics]\nbatch_sise: 4\n",
            "key 'batch_sise' is unknown; did you mean 'batch_size'?",
        ),
        ("roots: [pics]\nmodel: {nmae: x}\n", "key 'model.nmae' is unknown; did you mean 'name'?"),
        ("roots: [pics]\nbatch_size: many\n", "key 'batch_size' must be a whole number"),
        ("roots: [pics]\nbatch_size: true\n", "key 'batch_size' must be a whole number"),
        ("roots: [pics]\nskip_hidden: 3\n", "key 'skip_hidden' must be true or false"),
        ("roots: [pics]\nmodel: {device: tpu}\n", "key 'model.device' is 'tpu'; use one of"),
        ("roots: [pics]\ninclude: '*.jpg'\n", "key 'include' must be a list of glob patterns"),
        ("roots: [nope]\n", "key 'roots[0]' names"),
        ("roots: []\n", "key 'roots' must be a non-empty list"),
        ("batch_size: 3\n", "key 'roots' must be a non-empty list"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("roots: [pics\n", "fix the YAML syntax"),
        (
            "roots: [pics]\nmodel: {pretrained: ./missing.pt}\n",
            "key 'model.pretrained' names the file",
        ),
        ("roots: [pics]\nweb: 0.0.0.0:8765\n", "the web app serves only this machine"),
        ("roots: [pics]\nweb: on\n", "key 'web' must be a port or 'HOST:PORT'"),
        ("roots: [pics]\nupload_dir: elsewhere\n", "which is not inside a root"),
    ],
)
def test_errors_name_file_key_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "pics").mkdir()
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("value", "address"),
    [
        (None, "127.0.0.1:0"),  # on by default, on a free loopback port
        ("off", None),
        ("'off'", None),
        ("8765", "127.0.0.1:8765"),
        ("localhost:8765", "localhost:8765"),
        ("'[::1]:8765'", "[::1]:8765"),
    ],
)
def test_web_address(tmp_path: Path, value: str | None, address: str | None) -> None:
    (tmp_path / "pics").mkdir()
    config = load_config(write(tmp_path, "roots: [pics]\n" + (f"web: {value}\n" if value else "")))
    assert (str(config.web) if config.web else None) == address


def test_upload_dir_is_a_folder_inside_a_root(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    config = load_config(write(tmp_path, "roots: [pics]\nupload_dir: pics/added\n"))
    assert config.upload_dir == (tmp_path / "pics" / "added").resolve()
    assert load_config(write(tmp_path, "roots: [pics]\n")).upload_dir is None


def test_missing_root_says_how_to_fix(tmp_path: Path) -> None:
    path = write(tmp_path, "roots: [gone]\n")
    with pytest.raises(ConfigError, match=r"does not exist; create it or remove it from roots"):
        load_config(path)


def test_root_entries_with_poll_and_missing_roots_for_the_daemon(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    path = write(tmp_path, "roots: [pics, {path: nas, poll: true}]\nsettle_seconds: 0.5\n")
    with pytest.raises(ConfigError, match=r"'roots\[1\]' names .*nas, which does not exist"):
        load_config(path)
    config = load_config(path, require_roots=False)  # the daemon: an unmounted disk waits
    assert config.roots == ((tmp_path / "pics").resolve(), (tmp_path / "nas").resolve())
    assert config.poll_roots == ((tmp_path / "nas").resolve(),)
    assert config.settle_seconds == 0.5


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("roots: [{path: pics, pol: true}]\n", "key 'roots[0].pol' is unknown"),
        ("roots: [{path: pics, poll: 1}]\n", "key 'roots[0].poll' must be true or false"),
        ("roots: [pics]\nsettle_seconds: -1\n", "key 'settle_seconds' must be a number"),
        ("roots: [pics]\npoll_interval: fast\n", "key 'poll_interval' must be a number"),
    ],
)
def test_watch_key_errors(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "pics").mkdir()
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.yaml")


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "pics").mkdir()
    path = write(tmp_path, "roots: [pics]\n")
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out
    assert str((tmp_path / "pics").resolve()) in out


def test_check_config_command_reports_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "roots: [pics]\nbogus: 1\n")
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clipd: ")
    assert err.count("\n") == 1


def test_a_postgresql_url_selects_the_shared_store_and_its_password_is_never_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pics").mkdir()
    url = "postgresql://clipd:s3cret@db.example/clipd?sslmode=require&password=s3cret"
    path = write(tmp_path, f"roots: [pics]\ndatabase: '{url}'\nhost: nas-1\n")
    config = load_config(path)
    assert config.database == PostgresDatabase(url)
    assert config.host == "nas-1"
    assert "s3cret" not in str(config.database) + repr(config.database)
    assert str(config.database) == (
        "postgresql://clipd:***@db.example/clipd?sslmode=require&password=***"
    )
    assert main(["check-config", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out
    assert "host:               nas-1" in out
    monkeypatch.setenv("CLIPD_DATABASE", "postgres://other@h/db")
    assert load_config(path).database == PostgresDatabase("postgres://other@h/db")


@pytest.mark.parametrize("host", ["", "a b", "x:y", "a/b"])
def test_a_host_name_that_cannot_name_a_machine_is_refused(tmp_path: Path, host: str) -> None:
    (tmp_path / "pics").mkdir()
    with pytest.raises(ConfigError, match="'host'"):
        load_config(write(tmp_path, f"roots: [pics]\nhost: '{host}'\n"))


def test_the_host_defaults_to_the_machine_name(tmp_path: Path) -> None:
    (tmp_path / "pics").mkdir()
    assert load_config(write(tmp_path, "roots: [pics]\n")).host == socket.gethostname()

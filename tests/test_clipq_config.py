"""clipq finds the daemon from the daemon's own config file, the way the daemon reads it.

clipq reads the two keys it needs without a YAML library; these tests hold its reading to the
daemon's (the real config loader, with PyYAML) on the same files.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from harness import FakeDaemon

from clipd.config import load_config
from clipq import Client
from clipq._daemon_config import scalar, socket_path, token_path
from clipq.cli import main


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where $CLIPD_CONFIG points; the tests write it."""
    path = tmp_path / "conf" / "config.yaml"
    path.parent.mkdir()
    monkeypatch.setenv("CLIPD_CONFIG", str(path))
    return path


def write(config: Path, lines: str) -> None:
    # The daemon wants roots; a folder that need not exist is enough with require_roots=False.
    config.write_text(f"roots: [{config.parent / 'pics'}]\n{lines}")


@pytest.mark.parametrize(
    "lines",
    [
        "socket: /run/elsewhere/clipd.sock\ntoken_file: /keys/clipd-token\n",
        "socket: '/run/it''s here/clipd.sock'   # quoted, with a comment\n",
        'socket: "/run/tab\\there/clipd.sock"\ntoken_file: "~/keys/t"\n',
        "socket: sockets/clipd.sock\ntoken_file: ../token # relative to the file's folder\n",
        "socket: $HOME/clipd.sock\r\ntoken_file: ~/t\r\n",
        "socket: /first.sock\nsocket: /last.sock\n",
        "# socket: /commented/out.sock\nbatch_size: 8\n",
        "socket:   # nothing: the default\n",
        "socket: ~\ntoken_file: null\n",
        "socket: /a/b#c.sock\n",
    ],
)
def test_client_and_daemon_read_the_same_socket_and_token_file(
    config_file: Path, lines: str
) -> None:
    write(config_file, lines)
    daemon = load_config(config_file, require_roots=False)
    assert (socket_path(), token_path()) == (daemon.socket, daemon.token_file)


@pytest.mark.parametrize(
    "value",
    [
        "/plain/path.sock",
        "/with spaces/and:colon.sock",
        "/x.sock # comment",
        "'/single # not a comment'",
        "'it''s'",
        '"/double/\\u00e9"',
        '"/esc\\\\aped"',
        "~",
        "null",
        "",
        "[/a, /b]",
        "{a: b}",
        "&anchor /x",
        "!!str /x",
        "|",
        "123",
        "true",
    ],
)
def test_one_line_scalars_mean_what_yaml_says_or_are_skipped(value: str) -> None:
    """scalar() gives the string YAML gives, or None for a form it does not understand.

    Where YAML's value is no string (123, true) the daemon refuses the config anyway.
    """
    understood = scalar(value)
    meant = yaml.safe_load(f"key: {value}")["key"]
    if meant is None:
        assert understood is None
    elif understood is not None and isinstance(meant, str):
        assert meant == understood


def test_precedence_is_flag_then_environment_then_config_then_default(
    config_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    default = socket_path()
    write(config_file, f"socket: {tmp_path / 'configured.sock'}\n")
    assert socket_path() == tmp_path / "configured.sock"
    with Client() as client:
        assert client.where == str(tmp_path / "configured.sock")
    assert main(["cat"]) == 3
    assert f"no clipd daemon at {tmp_path / 'configured.sock'};" in capsys.readouterr().err
    assert main(["--socket", str(tmp_path / "flag.sock"), "cat"]) == 3
    assert f"no clipd daemon at {tmp_path / 'flag.sock'};" in capsys.readouterr().err
    monkeypatch.setenv("CLIPD_SOCKET", str(tmp_path / "env.sock"))
    assert socket_path() == tmp_path / "env.sock"
    monkeypatch.delenv("CLIPD_SOCKET")
    config_file.unlink()
    assert socket_path() == default


def test_the_token_file_from_the_config_is_read_over_tcp(
    config_file: Path, tmp_path: Path, fake_tcp_daemon: tuple[FakeDaemon, str]
) -> None:
    fake, address = fake_tcp_daemon
    token = tmp_path / "secret"
    write(config_file, f"token_file: {token}\n")
    assert token_path() == token
    token.write_text("s3cret\n")
    assert main(["--address", address, "cat"]) == 0
    assert fake.metadata[0]["authorization"] == "Bearer s3cret"


def test_an_unreadable_config_leaves_the_defaults(config_file: Path) -> None:
    default = socket_path()
    config_file.write_bytes(b"socket: /\xff\xfe.sock\n")
    assert socket_path() == default
    config_file.unlink()
    config_file.mkdir()
    assert socket_path() == default

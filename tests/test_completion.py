"""Shell completion: scripts generated from clipq's own parsers, valid in their shells, and the
bash one run for real."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from clipq import _parsers, cli
from clipq._completion import SHELLS, script

# Each shell's syntax check, where that shell is installed.
_SYNTAX_CHECKS = {"bash": ["bash", "-n"], "zsh": ["zsh", "-n"], "fish": ["fish", "--no-execute"]}

# Sources the script, sets up a completion of the words given as arguments, prints COMPREPLY.
_BASH_HARNESS = """
source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1))
_clipq
printf '%s\\n' "${COMPREPLY[@]}"
"""


def clipq_parsers() -> dict[str, argparse.ArgumentParser]:
    return {name: make() for name, make in _parsers.PARSERS.items()}


def clipq_script(shell: str) -> str:
    return script(shell, clipq_parsers(), default_command="search")


def options_of(parser: argparse.ArgumentParser) -> set[str]:
    return {name for action in parser._actions for name in action.option_strings}


def complete(script_path: Path, *words: str, cwd: Path | None = None) -> list[str]:
    """What bash offers for the last of `words`, the cursor being at its end."""
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", _BASH_HARNESS, "bash", str(script_path), *words],
        capture_output=True,
        text=True,
        check=True,
        cwd=cwd,
    )
    return [line for line in done.stdout.split("\n") if line]


@pytest.fixture
def clipq_bash(tmp_path: Path) -> Path:
    path = tmp_path / "clipq.bash"
    path.write_text(clipq_script("bash"), encoding="utf-8")
    return path


@pytest.mark.parametrize("shell", SHELLS)
def test_each_script_is_valid_in_its_shell(shell: str, tmp_path: Path) -> None:
    check = _SYNTAX_CHECKS[shell]
    if shutil.which(check[0]) is None:
        pytest.skip(f"{shell} is not installed here")
    path = tmp_path / f"clipq.{shell}"
    path.write_text(clipq_script(shell), encoding="utf-8")
    done = subprocess.run([*check, str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("command", _parsers.COMMANDS)
def test_bash_offers_every_option_of_every_command(clipq_bash: Path, command: str) -> None:
    words = ["clipq", "-"] if command == "search" else ["clipq", command, "-"]
    assert set(complete(clipq_bash, *words)) == options_of(clipq_parsers()[command])


@pytest.mark.parametrize("command", _parsers.COMMANDS)
def test_zsh_and_fish_list_every_option_of_every_command(command: str) -> None:
    options = options_of(clipq_parsers()[command])
    pattern = "''|search" if command == "search" else command
    branch = (
        clipq_script("zsh").split(f"        ({pattern})\n", 1)[1].split("\n            ;;", 1)[0]
    )
    assert set(re.findall(r"^ +'(-[^:]+):", branch, re.MULTILINE)) == options

    fish = clipq_script("fish")
    listed = re.findall(rf"^complete -c clipq -n '__clipq_using {command}' (.*) -d", fish, re.M)
    fish_options = set()
    for line in listed:
        fish_options |= {"--" + name for name in re.findall(r"-l (\S+)", line)}
        fish_options |= {"-" + name for name in re.findall(r"-s (\S)", line)}
    assert fish_options == options


@pytest.mark.parametrize(
    ("words", "offered"),
    [
        (["clipq", "sta"], ["status"]),
        (["clipq", ""], list(_parsers.COMMANDS)),
        (["clipq", "--li"], ["--limit"]),
        (["clipq", "--socket", "x", "sta"], ["status"]),  # an option's value is no command
        (["clipq", "-n", "5", "--js"], ["--json", "--jsonl"]),
        (["clipq", "red", "--jsonl"], ["--jsonl"]),
        (["clipq", "red", "sta"], []),  # a query word, not a command
        (["clipq", "--", "sta"], []),
        (["clipq", "status", "--wat"], ["--watch"]),
        (["clipq", "failures", "--o"], ["--offset"]),
        (["clipq", "failures", "--limit", ""], []),
        (["clipq", "completion", ""], ["bash", "zsh", "fish"]),
        (["clipq", "completion", "z"], ["zsh"]),
        (["clipq", "dup"], ["duplicates"]),
        (["clipq", "duplicates", "--tier", ""], ["exact", "reencoded", "variant"]),
    ],
)
def test_bash_completes(clipq_bash: Path, words: list[str], offered: list[str]) -> None:
    assert complete(clipq_bash, *words) == offered


@pytest.mark.skipif(shutil.which("fish") is None, reason="fish is not installed here")
def test_fish_completes(tmp_path: Path) -> None:
    path = tmp_path / "clipq.fish"
    path.write_text(clipq_script("fish"), encoding="utf-8")
    (tmp_path / "a photo.jpg").touch()

    def complete_fish(line: str) -> list[str]:
        command = f"source {path}; complete -C '{line}'"
        done = subprocess.run(
            ["fish", "--no-config", "-c", command],
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        return [row.split("\t")[0] for row in done.stdout.splitlines()]

    assert complete_fish("clipq sta") == ["status"]
    assert complete_fish("clipq --li") == ["--limit"]
    assert "--watch" in complete_fish("clipq status --")
    assert complete_fish("clipq red --js") == ["--json"]
    assert complete_fish("clipq red sta") == []
    assert complete_fish("clipq reindex a") == ["a photo.jpg"]
    assert complete_fish("clipq completion z") == ["zsh"]


def test_status_options_include_watch(clipq_bash: Path) -> None:
    assert "--watch" in complete(clipq_bash, "clipq", "status", "--")


def test_bash_completes_file_names_for_paths(clipq_bash: Path, tmp_path: Path) -> None:
    (tmp_path / "a photo.jpg").touch()
    (tmp_path / "albums").mkdir()
    expected = ["a photo.jpg", "albums"]
    assert sorted(complete(clipq_bash, "clipq", "reindex", "a", cwd=tmp_path)) == expected
    assert sorted(complete(clipq_bash, "clipq", "--socket", "a", cwd=tmp_path)) == expected
    # bash splits `--socket=a` into `--socket`, `=`, `a`.
    assert sorted(complete(clipq_bash, "clipq", "--socket", "=", "a", cwd=tmp_path)) == expected


def test_values_follow_the_metavar_and_choices_convention(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser(prog="clipq")
    parser.add_argument("query", nargs="*", metavar="QUERY")
    parser.add_argument("--under", metavar="DIR")
    parser.add_argument("--image", metavar="IMAGE")
    parser.add_argument("--color", choices=("auto", "always", "never"))
    parser.add_argument("--since", metavar="TIME")
    path = tmp_path / "made.bash"
    path.write_text(script("bash", {"search": parser}, default_command="search"), "utf-8")
    (tmp_path / "a.jpg").touch()
    (tmp_path / "albums").mkdir()

    assert complete(path, "clipq", "--under", "a", cwd=tmp_path) == ["albums"]
    assert sorted(complete(path, "clipq", "--image", "a", cwd=tmp_path)) == ["a.jpg", "albums"]
    assert complete(path, "clipq", "--color", "a") == ["auto", "always"]
    assert complete(path, "clipq", "--since", "", cwd=tmp_path) == []
    assert complete(path, "clipq", "red", "a", cwd=tmp_path) == []

    fish = script("fish", {"search": parser}, default_command="search")
    assert "-l under -x -a '(__fish_complete_directories)'" in fish
    assert "-l image -r -F" in fish
    assert "-l color -x -a 'auto always never'" in fish
    zsh = script("zsh", {"search": parser}, default_command="search")
    assert "(--under) _files -/; return ;;" in zsh
    assert "(--image) _files; return ;;" in zsh
    assert "(--color) compadd -- auto always never; return ;;" in zsh


def test_quotes_in_help_texts_are_escaped() -> None:
    parser = argparse.ArgumentParser(prog="clipq", description="Search what's there. More.")
    parser.add_argument("--it", action="store_true", help="it's 'quoted' \\ here; more")
    assert "-d 'it\\'s \\'quoted\\' \\\\ here'" in script(
        "fish", {"search": parser}, default_command="search"
    )
    assert "'--it:it'\\''s '\\''quoted'\\'' \\ here'" in script(
        "zsh", {"search": parser}, default_command="search"
    )


def test_an_unknown_shell_is_refused() -> None:
    with pytest.raises(ValueError, match="choose one of bash, zsh, fish"):
        script("tcsh", clipq_parsers(), default_command="search")


def test_clipq_completion_prints_the_script_without_a_daemon(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["completion", "fish"]) == 0
    out, err = capsys.readouterr()
    assert out == clipq_script("fish")
    assert err == ""


def test_the_completion_command_offers_every_shell() -> None:
    (shell,) = (a for a in clipq_parsers()["completion"]._actions if a.dest == "shell")
    assert tuple(shell.choices or ()) == SHELLS


def test_other_commands_do_not_import_the_generator() -> None:
    code = "import sys, clipq.cli; print('clipq._completion' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

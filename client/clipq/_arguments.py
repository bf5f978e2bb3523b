"""How clipq reads its command line: which words are options, and what option values mean.

Query words may start with '-' (`clipq beach -people`), so argparse alone cannot tell them from
options; these functions sort the words first, and check option values as argparse types.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence

from clipq._query import QueryError, parse_when

MAX_LIMIT = 1000
MAX_OFFSET = 2**32 - 1


def split_command(
    argv: list[str], commands: Sequence[str], parser: argparse.ArgumentParser
) -> tuple[str, list[str]]:
    """The command that the first word of argv names, and argv without it; else "search".

    Options of `parser` before that word are skipped with their values (`clipq --socket S
    status`); after `--`, every word is a search word (`clipq -- status`).
    """
    value_options = _value_options(parser)
    skip_value = False
    for index, arg in enumerate(argv):
        if skip_value:
            skip_value = False
        elif arg == "--":
            break
        elif arg.startswith("-") and arg != "-":
            skip_value = _needs_value(arg, value_options)
        else:
            if arg in commands:
                return arg, argv[:index] + argv[index + 1 :]
            break
    return "search", argv


def options_then_words(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """argv rearranged as its options, `--`, then the query words, for argparse.

    Query words may start with '-' (`-people`, `-0.5:night`): a word is an option only when it
    is one of the parser's (`-n 5`, `-n5`, `--limit=5`, or an unambiguous `--lim 5`). Option
    values are attached with '=' or directly, so a value like `-0.2` is never taken for an
    option either.
    """
    value_options = _value_options(parser)
    all_options = {opt for action in parser._actions for opt in action.option_strings}
    options: list[str] = []
    words: list[str] = []
    items = iter(argv)
    for arg in items:
        if arg == "--":
            words.extend(items)
            break
        if not arg.startswith("--") and _option_name(arg, all_options) not in all_options:
            words.append(arg)
        elif _needs_value(arg, value_options):
            value = next(items, None)
            options.append(arg if value is None else _attached(arg, value))
        else:
            # Unknown long options too, for argparse to refuse.
            options.append(arg)
    return [*options, "--", *words]


def _option_name(arg: str, known: set[str]) -> str | None:
    """The option that arg names: `--limit=5` and `--lim` name --limit, `-n5` names -n."""
    if arg.startswith("--"):
        name = arg.split("=", 1)[0]
        # argparse also accepts an unambiguous prefix of a long option: `--sock PATH`.
        matches = [opt for opt in known if opt.startswith(name) and opt.startswith("--")]
        return name if name in known else matches[0] if len(matches) == 1 else name
    if arg.startswith("-") and len(arg) > 1:
        # `-n5` is -n with its value, but `-night` is a query word, not `-n ight`.
        return arg if arg in known or not arg[2:].isdigit() else arg[:2]
    return None


def _needs_value(arg: str, value_options: set[str]) -> bool:
    """Whether arg is an option whose value is the next word (`-n 5`, not `-n5` or `--limit=5`)."""
    name = _option_name(arg, value_options)
    if name not in value_options:
        return False
    return arg == name if not arg.startswith("--") else "=" not in arg


def _attached(option: str, value: str) -> str:
    if option.startswith("--"):
        return f"{option}={value}"
    # A short option's value follows it directly: `-n5`; an empty one cannot.
    return option + value if value else option


def _value_options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions if action.nargs != 0 for opt in action.option_strings}


def limit(text: str) -> int:
    return whole_number(text, 1, MAX_LIMIT)


def offset(text: str) -> int:
    return whole_number(text, 0, MAX_OFFSET)


def score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not -1 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between -1 and 1, not {text}")
    return value


# The loosest duplicate threshold the daemon accepts (clipd.duplicates.MIN_THRESHOLD).
MIN_DUPLICATE_THRESHOLD = 0.5


def threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not MIN_DUPLICATE_THRESHOLD <= value <= 1:
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_DUPLICATE_THRESHOLD} and 1, not {text}"
        )
    return value


def extensions(text: str) -> list[str]:
    extensions = [part.strip().lstrip(".").lower() for part in text.split(",")]
    for ext in extensions:
        if not (ext.isascii() and ext.isalnum()):
            raise argparse.ArgumentTypeError(f"not a file extension like jpg or png: {text!r}")
    return extensions


def when(text: str) -> float:
    try:
        return parse_when(text)
    except QueryError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def whole_number(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high}, not {value}")
    return value


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    # `value > 0` also rejects NaN.
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value

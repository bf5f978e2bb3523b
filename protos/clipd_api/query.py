"""The query language, shared by clipq's command line and the daemon's web search box.

    beach -people 2:sunset +dog photo.jpg

Plain words form one text ("beach"); `+TEXT` and `-TEXT` add and subtract a term of their own;
`W:TERM` gives a term the weight W; a word that names an image queries by example (which words
name images is the caller's to say: files on disk for clipq, indexed paths for the daemon).

Pure Python with no dependencies: clipq imports it on every start.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# "2:sunset", "-0.5:people", ".5:dog"
_WEIGHTED = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)):(.*)", re.DOTALL)

ImageProbe = Callable[[str], bool]


class QueryError(ValueError):
    """A query word that cannot be understood; str() says which and why."""


@dataclass(frozen=True, slots=True)
class ParsedTerm:
    """One term of a query: a text, or (image=True) a word that names an image."""

    value: str
    weight: float = 1.0
    image: bool = False


def parse_words(words: Sequence[str], probe: ImageProbe) -> list[ParsedTerm]:
    """The terms query words ask for; plain words join into one text, the first term.

    `probe` tells the words that name images from the others. An empty list means the words
    were all blank; callers decide whether that is an error.
    """
    plain: list[str] = []
    terms: list[ParsedTerm] = []
    for word in words:
        signed = _signed_term(word)
        if signed is not None:
            body, weight = signed
            terms.append(ParsedTerm(body, weight, image=probe(body)))
        elif probe(word):
            terms.append(ParsedTerm(word, image=True))
        else:
            plain.append(word)
    text = " ".join(plain).strip()
    if text:
        terms.insert(0, ParsedTerm(text))
    return terms


def split_words(query: str) -> list[str]:
    """A query typed as one line (a search box) split into words as a shell would split them:
    quotes keep a term whole (`-"red car"`); unbalanced quotes fall back to plain spaces."""
    import shlex  # only the daemon splits lines; clipq gets its words from the shell

    try:
        return shlex.split(query)
    except ValueError:  # "No closing quotation": take the words as typed
        return query.split()


def _signed_term(word: str) -> tuple[str, float] | None:
    """(term, weight) for `+TERM`, `-TERM` and `W:TERM`; None for a plain word."""
    match = _WEIGHTED.fullmatch(word)
    if match:
        body, weight = match[2], float(match[1])
    elif len(word) > 1 and word[0] in "+-":
        body, weight = word[1:], (1.0 if word[0] == "+" else -1.0)
    else:
        return None
    if not body.strip():
        raise QueryError(f"{word!r}: nothing follows the {'weight' if match else 'sign'}")
    if weight == 0:
        raise QueryError(f"{word!r}: a weight of 0 would ignore the term; leave it out instead")
    return body, weight

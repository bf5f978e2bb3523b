"""The query language, shared by clipq's command line and the daemon's web search box.

    beach -people 2:sunset +dog photo.jpg

Plain words form one text ("beach"); `+TEXT` and `-TEXT` add and subtract a term of their own;
`W:TERM` gives a term the weight W; a word that looks like a path (a '/' or an image extension)
names an image to query by example: for clipq a file, for the daemon an indexed path; and
`HOST:/PATH` another machine's indexed file in a shared index. Either refuses such a word when
it names none, rather than search it as text.

Pure Python with no dependencies: clipq imports it on every start.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

# "2:sunset", "-0.5:people", ".5:dog"
_WEIGHTED = re.compile(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)):(.*)", re.DOTALL)

# Endings that make a word a file name rather than text: `clipq beach.jpg` means that file.
# Every format the daemon indexes by default is here (a test holds the two lists together).
IMAGE_EXTENSIONS = frozenset(
    {
        *("jpg", "jpeg", "jpe", "jfif", "png", "webp", "gif", "bmp", "tif", "tiff"),
        *("heic", "heif", "hif", "avif", "jxl"),
        *("dng", "cr2", "cr3", "nef", "nrw", "arw", "srf", "sr2", "raf", "orf", "rw2", "rwl"),
        *("pef", "srw", "3fr", "erf", "dcr", "kdc"),
    }
)


class QueryError(ValueError):
    """A query word that cannot be understood; str() says which and why."""


@dataclass(frozen=True, slots=True)
class ParsedTerm:
    """One term of a query: a text, or (image=True) a word that names an image file."""

    value: str
    weight: float = 1.0
    image: bool = False


def looks_like_path(word: str) -> bool:
    """Whether a query word names a file: it has a '/' or ends in an image extension.

    Any other word is text, even when a file of that name happens to be in the current folder
    (`clipq square` searches for squares); `./square` names the file.
    """
    ext = word.rpartition(".")[2]
    return "/" in word or ("." in word and ext.lower() in IMAGE_EXTENSIONS)


def on_host(host: str, path: str) -> str:
    """How another machine's file is named (its hits as clipq prints them, query words):
    "laptop:/a/b.jpg"; host_and_path reads it back."""
    return f"{host}:{path}"


def host_and_path(word: str) -> tuple[str, str]:
    """("laptop", "/a/b.jpg") for "laptop:/a/b.jpg": another machine's file in a shared index,
    named as clipq prints its hits; ("", word) for any other word. A host has no '/', so
    "./a:/b.jpg" and "/a:/b.jpg" are paths of this machine."""
    host, colon, path = word.partition(":/")
    if not colon or not host or "/" in host:
        return "", word
    return host, "/" + path


def parse_words(words: Sequence[str], texts: Sequence[str] = ()) -> list[ParsedTerm]:
    """The terms query words ask for. Plain words, then `texts` (always text), join into one
    text, the first term; an empty list means there was nothing but blanks."""
    plain: list[str] = []
    terms: list[ParsedTerm] = []
    for word in words:
        signed = _signed_term(word)
        body, weight = signed if signed is not None else (word, None)
        if looks_like_path(body):
            terms.append(ParsedTerm(body, 1.0 if weight is None else weight, image=True))
        elif weight is not None:
            terms.append(ParsedTerm(body, weight))
        else:
            plain.append(word)
    text = " ".join([*plain, *texts]).strip()
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

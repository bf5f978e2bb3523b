"""CLIP's byte-pair tokenizer without torch, for the daemon's text tower in ONNX Runtime.

open_clip's SimpleTokenizer imports torch at its module's top, and torch is most of what the
daemon would hold in memory and load at start. This is the same tokenizer (the same cleaning,
word pattern, merges and vocabulary file, open_clip's own, found without importing open_clip),
returning numpy arrays. clipd.onnx_texts uses it only after checking, at export, that it
gives the model's tokenizer's tokens for its probe texts.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.util
import itertools
from pathlib import Path

import ftfy
import numpy as np
import numpy.typing as npt
import regex

Tokens = npt.NDArray[np.int64]

_VOCABULARY_FILE = "bpe_simple_vocab_16e6.txt.gz"
# The merges CLIP was trained with: the file's lines after its header, up to this many.
_MERGES = 49152 - 256 - 2
_START, _END = "<start_of_text>", "<end_of_text>"
_WORD_END = "</w>"


def vocabulary_file() -> Path | None:
    """open_clip's vocabulary file, found without importing open_clip (which imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / _VOCABULARY_FILE
        if candidate.is_file():
            return candidate
    return None


class ClipTokenizer:
    """Texts in, token ids out: [start] + the text's tokens + [end], truncated to
    context_length with the end token kept last, as open_clip's SimpleTokenizer makes them
    with its default cleaning ("lower")."""

    def __init__(self, vocabulary: Path, context_length: int) -> None:
        lines = gzip.decompress(vocabulary.read_bytes()).decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : _MERGES + 1]]
        symbols = list(_byte_symbols().values())
        words = [*symbols, *(symbol + _WORD_END for symbol in symbols),
                 *("".join(merge) for merge in merges), _START, _END]  # fmt: skip
        self._ids = {word: index for index, word in enumerate(words)}
        self._ranks = {(merge[0], merge[1]): rank for rank, merge in enumerate(merges)}
        self._pieces: dict[str, list[str]] = {_START: [_START], _END: [_END]}
        self._pattern = regex.compile(
            rf"{_START}|{_END}|'s|'t|'re|'ve|'m|'ll|'d|[\p{{L}}]+|[\p{{N}}]|[^\s\p{{L}}\p{{N}}]+",
            regex.IGNORECASE,
        )
        self.context_length = context_length
        self.vocabulary_size = len(words)

    def __call__(self, texts: list[str]) -> Tokens:
        """One row per text, as long as the longest (zeros after a shorter row's end token):
        the model reads each text's feature at its end token, causally, so the padding to
        context_length that open_clip adds changes nothing and is left out."""
        rows = [self._row(text) for text in texts]
        tokens: Tokens = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
        for index, row in enumerate(rows):
            tokens[index, : len(row)] = row
        return tokens

    def _row(self, text: str) -> list[int]:
        row = [self._ids[_START], *self.encode(text), self._ids[_END]]
        if len(row) > self.context_length:
            row = [*row[: self.context_length - 1], self._ids[_END]]
        return row

    def encode(self, text: str) -> list[int]:
        """The text's token ids, without the start and end tokens."""
        byte_symbols = _byte_symbols()
        ids: list[int] = []
        for word in self._pattern.findall(_cleaned(text)):
            spelled = "".join(byte_symbols[byte] for byte in word.encode("utf-8"))
            ids.extend(self._ids[piece] for piece in self._merged(spelled))
        return ids

    def _merged(self, word: str) -> list[str]:
        """The word's pieces: its symbols (the last marked as the word's end), merged pair by
        pair, the pair learnt first merging first, until no learnt pair is left."""
        known = self._pieces.get(word)
        if known is not None:
            return known
        pieces = [*word[:-1], word[-1] + _WORD_END]
        while len(pieces) > 1:
            pair = min(itertools.pairwise(pieces), key=lambda p: self._ranks.get(p, _MERGES))
            if pair not in self._ranks:
                break
            merged: list[str] = []
            index = 0
            while index < len(pieces):
                if index + 1 < len(pieces) and (pieces[index], pieces[index + 1]) == pair:
                    merged.append(pieces[index] + pieces[index + 1])
                    index += 2
                else:
                    merged.append(pieces[index])
                    index += 1
            pieces = merged
        if len(self._pieces) < 100_000:  # queries repeat words; a bound keeps a daemon's memory
            self._pieces[word] = pieces
        return pieces


def _cleaned(text: str) -> str:
    """open_clip's "lower" cleaning: mojibake mended, HTML entities (twice) decoded,
    whitespace runs made one space, lower case."""
    text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
    return " ".join(text.split()).lower()


@functools.cache
def _byte_symbols() -> dict[int, str]:
    """Each byte's printable stand-in, as GPT-2's and CLIP's byte-level BPE spell text: the
    printable Latin-1 bytes stand for themselves, the others for characters from U+0100 on."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    others = [byte for byte in range(256) if byte not in printable]
    return {byte: chr(byte) for byte in printable} | {
        byte: chr(256 + offset) for offset, byte in enumerate(others)
    }

"""clipd's torch-free CLIP tokenizer against open_clip's own, text by text."""

from __future__ import annotations

import random

import numpy as np
import open_clip
import pytest

from clipd.clip_tokenizer import ClipTokenizer, vocabulary_file

TEXTS = [
    "red brick wall",
    "A Photo of a DOG on the beach!!",
    "café naïve résumé crème brûlée",
    "夕焼けの東京タワー",
    "emoji 🐶🏖️ party",
    "it's the dog's ball, we'll see, they've gone",
    "&amp;lt;b&amp;gt; escaped &quot;html&quot;",
    "  spaced\t\nout  ",
    "",
    "numbers 12345 and 3.14, 1/2",
    "mojibake: cafÃ© ",
    "Ελληνικά κείμενα και русский текст",
    "<start_of_text> typed by a user <END_OF_TEXT>",
    "antidisestablishmentarianism supercalifragilistic",
]


def _random_texts(count: int) -> list[str]:
    rng = random.Random(7)
    alphabet = "abcdefghijklmnopqrstuvwxyz ABCXYZ 0123456789.,!?'-&;éßø日本🐶\t"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 90))) for _ in range(count)]


@pytest.mark.parametrize("context_length", [77, 16])
def test_tokens_are_open_clips(context_length: int) -> None:
    vocabulary = vocabulary_file()
    assert vocabulary is not None
    ours = ClipTokenizer(vocabulary, context_length)
    theirs = open_clip.tokenize  # SimpleTokenizer, the default cleaning
    for text in [*TEXTS, "word " * 100, *_random_texts(200)]:
        row = ours([text])[0]
        padded = theirs([text], context_length=context_length)[0].numpy()
        assert np.array_equal(row, padded[: len(row)]), text
        assert not padded[len(row) :].any(), text  # only padding is left out


def test_rows_are_as_long_as_the_longest_text_and_end_with_the_end_token() -> None:
    vocabulary = vocabulary_file()
    assert vocabulary is not None
    tokenizer = ClipTokenizer(vocabulary, 16)
    end = tokenizer.vocabulary_size - 1
    tokens = tokenizer(["a", "a red brick wall", "word " * 40])
    assert tokens.dtype == np.int64
    assert tokens.shape == (3, 16)  # the longest is truncated to the context length
    assert list(tokens.argmax(axis=1)) == [2, 5, 15]  # the end token: the largest id
    assert tokens[0, 2] == end
    assert not tokens[0, 3:].any()

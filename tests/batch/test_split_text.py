"""Long texts cut at sentence boundaries, never mid-word; transcripts joined back."""

from __future__ import annotations

import itertools
import re

import pytest

from mimoq.core.splitting.text import join_transcripts, split_text

CASES = [
    # (text, max_chars, expected parts)
    ("Short.", 100, ["Short."]),
    ("One. Two. Three.", 10, ["One. Two. ", "Three."]),
    ("Hello there. How are you? Fine!", 14, ["Hello there. ", "How are you? ", "Fine!"]),
    ("Pi is 3.14 and e is 2.71. Next.", 26, ["Pi is 3.14 and e is 2.71. ", "Next."]),
    ("First para.\n\nSecond para here.", 20, ["First para.\n\n", "Second para here."]),
    ("a, b, c; and so on: done", 9, ["a, b, c; ", "and so ", "on: done"]),
    ('Quoted "end." Then more.', 14, ['Quoted "end." ', "Then more."]),
    (
        "今天天气很好。我们去公园吧！你觉得呢？",
        8,
        ["今天天气很好。", "我们去公园吧！", "你觉得呢？"],
    ),
    ("今天天气很好，我们去公园吧", 8, ["今天天气很好，", "我们去公园吧"]),
    ("一二三四五六七八九十", 4, ["一二三四", "五六七八", "九十"]),
    ("supercalifragilistic word", 8, ["supercal", "ifragili", "stic ", "word"]),
    ("Mixed 中文。English now. 再来！", 13, ["Mixed 中文。", "English now. ", "再来！"]),
    ("Trailing spaces.      ", 16, ["Trailing spaces.      "]),
]


@pytest.mark.parametrize(("text", "max_chars", "expected"), CASES)
def test_split_text(text: str, max_chars: int, expected: list[str]) -> None:
    assert split_text(text, max_chars) == expected


@pytest.mark.parametrize("max_chars", [20, 57, 200, 2500])
def test_split_is_lossless_within_limit_and_cuts_only_between_words(max_chars: int) -> None:
    words = [f"word{i}" + ("." if i % 7 == 6 else "," if i % 5 == 4 else "") for i in range(2000)]
    text = " ".join(words)
    parts = split_text(text, max_chars)
    assert "".join(parts) == text
    assert all(len(p) <= max_chars for p in parts)
    for before, after in itertools.pairwise(parts):
        assert before.endswith(" ") and re.match(r"word\d", after)


def test_sentences_are_preferred_to_clauses_and_words() -> None:
    text = "This is one sentence, with a clause. " * 80
    parts = split_text(text, 400)
    assert all(p.endswith(". ") for p in parts)


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        split_text("x", 0)


@pytest.mark.parametrize(
    ("parts", "joined"),
    [
        (["Hello world.", "How are you?"], "Hello world. How are you?"),
        ([" padded ", "  text "], "padded text"),
        (["你好。", "世界"], "你好。世界"),
        (["English.", "中文"], "English.中文"),
        (["a", "", "   ", "b"], "a b"),
        ([], ""),
    ],
)
def test_join_transcripts(parts: list[str], joined: str) -> None:
    assert join_transcripts(parts) == joined

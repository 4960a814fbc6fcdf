"""Incremental detokenization and stop strings, with the real tokenizer (no model needed)."""

from __future__ import annotations

import pytest

from tests.conftest import MODEL_CACHE
from tutorforge.core.models import load_chat_tokenizer
from tutorforge.core.settings import ModelSettings
from tutorforge.inference.decoding import IncrementalDecoder, StopMatcher


@pytest.fixture(scope="module")
def tokenizer():
    return load_chat_tokenizer(ModelSettings(cache_dir=MODEL_CACHE))


@pytest.mark.parametrize("text", ["Héllo wörld, ça va?", "日本語のテキスト 🎉🎉 done", "  leading spaces\n\nand  double", "a" * 50])
def test_streamed_pieces_spell_the_whole_text(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(token) for token in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("\ufffd" in piece for piece in pieces)


def test_multibyte_characters_are_held_until_complete(tokenizer):
    ids = tokenizer("🎉", add_special_tokens=False)["input_ids"]
    assert len(ids) > 1  # byte-level BPE splits the emoji
    decoder = IncrementalDecoder(tokenizer)
    assert [decoder.push(token) for token in ids[:-1]] == [""] * (len(ids) - 1)
    assert decoder.push(ids[-1]) == "🎉"


def test_stop_matcher_cuts_and_holds_back_prefixes():
    matcher = StopMatcher(("END", "\n\n"))
    assert matcher.feed("Hello E") == "Hello "  # "E" may start "END"
    assert matcher.feed("v") == "Ev"  # it did not
    assert matcher.feed("er\n") == "er"
    assert matcher.feed("\nmore") == "" and matcher.stopped


def test_stop_matcher_flushes_a_held_tail():
    matcher = StopMatcher(("STOP",))
    assert matcher.feed("the ST") == "the "
    assert matcher.flush() == "ST" and not matcher.stopped
    assert StopMatcher(()).feed("anything") == "anything"

"""Tests for mhsa_cli/tasks/tokenizer.py: kinds, ids, JSON round trip through a checkpoint."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from mhsa_cli.tasks import load_task, task_from_spec
from mhsa_cli.tasks import tokenizer as tk
from mhsa_cli.tasks.text import spec_tokenizer
from tests.conftest import tiny_train_config


def tokenize(text: str) -> list[str]:
    """The word tokenizer's split, written out as a test oracle: lowercase, then the regex."""
    return re.findall(tk.WORD_PATTERN, text.lower())


def encode(texts: list[str], spec: dict) -> torch.Tensor:
    """(N, max_len) ids of new texts as a stored spec's tokenizer makes them (training's encoder)."""
    return tk.encode(spec_tokenizer(spec), texts, int(spec["max_len"]))

TEXTS = ["The quick brown fox jumps over the lazy dog!", "Quickly, quicker: the quickest fox?",
         "dogs and foxes, jumping quickly", "lazy lazy dogs sleep"] * 5


def write_csv(path, n=60):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for i in range(n):
            w.writerow([f"{'good great fine' if i % 2 else 'bad awful poor'} thing number{i % 7} "
                        + "word " * (i % 9), "pos" if i % 2 else "neg"])
    return str(path)


@pytest.mark.parametrize("kind", list(tk.TOKENIZERS))
def test_specials_are_0_and_1_and_json_round_trip(kind):
    tok = tk.train_tokenizer(kind, TEXTS, vocab_size=60)
    assert tok.token_to_id(tk.PAD) == 0 and tok.token_to_id(tk.UNK) == 1
    assert tok.get_vocab_size() <= 60
    again = tk.from_json(json.loads(json.dumps(tk.to_json(tok))))
    texts = TEXTS + ["unseen zebra text ✓", ""]
    assert torch.equal(tk.encode(tok, texts, 16), tk.encode(again, texts, 16))


def test_word_and_char_match_the_regex_split():
    tok = tk.train_tokenizer("word", TEXTS)
    text = "The lazy fox, quickly!"
    assert tk.tokens_of(tok, text) == tokenize(text) == ["the", "lazy", "fox", ",", "quickly", "!"]
    char = tk.train_tokenizer("char", TEXTS)
    assert tk.tokens_of(char, "a fox") == ["a", " ", "f", "o", "x"]
    # word vocabulary: most frequent first, ties alphabetical
    counts = {}
    for t in TEXTS:
        for w in tokenize(t):
            counts[w] = counts.get(w, 0) + 1
    expected = sorted(counts, key=lambda w: (-counts[w], w))
    assert tk.vocab_list(tok)[2:] == expected


def test_bpe_splits_unseen_words_into_known_pieces_and_is_reproducible():
    tok = tk.train_tokenizer("bpe", TEXTS, vocab_size=80)
    pieces = tk.tokens_of(tok, "quickest")
    assert "".join(pieces) == "quickest" and tk.UNK not in pieces
    assert tk.to_json(tk.train_tokenizer("bpe", TEXTS, vocab_size=80)) == tk.to_json(tok)
    assert tk.train_tokenizer("bpe", TEXTS, vocab_size=40).get_vocab_size() <= 40


def test_encode_truncates_pads_and_gives_empty_text_one_unk():
    tok = tk.train_tokenizer("word", TEXTS)
    x = tk.encode(tok, ["the fox", "the " * 10, ""], 4)
    the, fox = tok.token_to_id("the"), tok.token_to_id("fox")
    assert x.tolist() == [[the, fox, 0, 0], [the] * 4, [1, 0, 0, 0]]
    assert tk.token_counts(tok, ["the fox", ""]) == [2, 0]


def test_bad_stored_tokenizer_is_one_line():
    from mhsa_cli.errors import MhsaError

    with pytest.raises(MhsaError, match="stored tokenizer cannot be loaded"):
        tk.from_json({"model": {"type": "Nope"}})


@pytest.mark.parametrize("kind", ["bpe", "word"])
def test_round_trip_through_a_checkpoint_gives_identical_ids(tmp_path, kind):
    from mhsa_cli.checkpoint import load_checkpoint
    from mhsa_cli.train import train

    path = write_csv(tmp_path / "d.csv")
    out = tmp_path / "ckpt"
    train(tiny_train_config(out, task="text", task_options={"path": path, "tokenizer": kind,
                                                            "max_vocab": 50}, epochs=1))
    meta = load_checkpoint(out).meta
    stored = meta["task"]
    assert isinstance(stored["tokenizer"], dict) and stored["tokenizer_kind"] == kind
    assert "vocab" not in stored
    fresh = load_task("text", path=path, tokenizer=kind, max_vocab=50)
    rebuilt = task_from_spec(stored)
    for name in ("train", "val", "test"):
        assert torch.equal(rebuilt.split(name).x, fresh.split(name).x)
    new = ["good zebra thing", "awful number3 words"]
    assert torch.equal(encode(new, stored), encode(new, fresh.spec))
    assert spec_tokenizer(stored).to_str() == spec_tokenizer(fresh.spec).to_str()


def test_tokenizer_option_on_a_non_text_task_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from mhsa_cli.cli import app
    from tests.conftest import assert_one_line_error

    out = tmp_path / "o"
    result = CliRunner().invoke(app, ["train", "--task", "order", "--task-opt", "tokenizer=bpe", "--out", str(out)])
    assert_one_line_error(result, "no option 'tokenizer'")
    assert not out.exists()

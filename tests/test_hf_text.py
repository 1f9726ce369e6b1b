"""tasks/hf_text.py: the user's file tokenized with a stored tokenizers JSON."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("tokenizers")

from mhsa_cli.errors import MhsaError  # noqa: E402
from mhsa_cli.tasks import hf_text, task_from_spec  # noqa: E402


@pytest.fixture(scope="module")
def tok():
    """A word-level tokenizer: [PAD]=0 ... [CLS]=2, [SEP]=3, then a, b, c, d; [CLS] x [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b", "c", "d"])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return json.loads(t.to_str())


def test_encode_adds_specials_truncates_and_pads_with_pad_id(tok):
    x = hf_text.encode(["a b", "a b c d a b c d", "zzz"], tok, max_len=6, pad_id=7)
    assert x.tolist() == [[2, 4, 5, 3, 7, 7], [2, 4, 5, 6, 7, 3], [2, 1, 3, 7, 7, 7]]


def test_build_and_rebuild_from_spec(tok, tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "".join(f"{'a b' if i % 2 else 'c d'},{'x' if i % 2 else 'y'}\n" for i in range(40)))
    data = hf_text.build(0, tok, 0, None, path=str(csv), max_len=5)
    assert data.labels == ["x", "y"] and data.max_len == 5 and data.vocab_size == 8
    assert data.spec["tokenizer"] == tok and data.spec["pad_id"] == 0
    again = task_from_spec(json.loads(json.dumps(data.spec)))
    for a, b in ((data.train, again.train), (data.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    # a model's own labels are kept (order too) when the file's are among them
    assert hf_text.build(0, tok, 0, ["z", "y", "x"], path=str(csv)).labels == ["z", "y", "x"]
    csv.write_text(csv.read_text() + "a,x\n")
    with pytest.raises(MhsaError, match="changed since"):
        task_from_spec(data.spec)


def test_a_spec_without_data_encodes_as_predict_does(tok):
    from mhsa_cli.tasks.encoding import spec_encoder

    spec = hf_text.data_spec(tok, 1, ["x", "y"], 5)
    assert hf_text.encode(["a", "b c d e f"], spec["tokenizer"], spec["max_len"], spec["pad_id"]).tolist() == [
        [2, 4, 3, 1, 1], [2, 5, 6, 7, 3]]
    enc, special, pad_id = spec_encoder(spec)  # predict: truncated to max_len, specials added, pad id 1
    assert special and pad_id == 1
    assert [e.ids for e in enc.encode_batch(["a", "b c d e f"], add_special_tokens=True)] == [[2, 4, 3], [2, 5, 6, 7, 3]]


def test_spec_without_data_says_how_to_attach_it(tok):
    with pytest.raises(MhsaError, match="train --init CKPT --data FILE"):
        task_from_spec(hf_text.data_spec(tok, 0, ["a", "b"], 16))
    with pytest.raises(MhsaError, match="needs a checkpoint's tokenizer"):
        hf_text.build(0, None, 0, None, path="x.csv")


def test_max_len_auto_is_the_99th_percentile_of_training_rows_with_specials(tok, tmp_path):
    """100 rows of 1..100 words: [CLS]/[SEP] add 2, so training-split token counts are 3..102;
    the nearest-rank 99th percentile of the split's counts, computed here by hand, is max_len."""
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "".join(f"{' '.join(['a'] * n)},{'x' if n % 2 else 'y'}\n" for n in range(1, 101)))
    data = hf_text.build(0, tok, 0, None, path=str(csv))
    counts = sorted(int((row != 0).sum()) for row in data.train.x)  # no truncation below the percentile rank
    k = -(-len(counts) * 99 // 100) - 1
    assert data.max_len == counts[k] and data.spec["max_len_auto"] is True
    assert hf_text.build(0, tok, 0, None, path=str(csv), max_positions=16).max_len == 16  # the model's positions cap it
    assert hf_text.build(0, tok, 0, None, path=str(csv), max_len=7).spec["max_len_auto"] is False


def test_splits_are_ragged_and_cut_at_the_models_pad_id(tok, tmp_path):
    """Length-aware batching: a batch is cut to its longest row, counted with the model's pad id (RoBERTa: 1)."""
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "".join(f"{' '.join(['b'] * (1 + i % 5))},{'x' if i % 2 else 'y'}\n" for i in range(40)))
    data = hf_text.build(0, tok, 1, None, path=str(csv), max_len=12)
    split = data.train
    assert split.ragged and split.pad_id == 1
    want = (split.x != 1).sum(dim=1)  # rows are [CLS] b.. [SEP] then pad 1: length = non-pad count
    assert torch.equal(split.lengths, want)
    idx = torch.tensor([i for i in range(len(split)) if int(want[i]) == 4][:3])
    x, _ = split.rows(idx)
    assert x.shape == (3, 4)

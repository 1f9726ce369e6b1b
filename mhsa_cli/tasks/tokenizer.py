"""Tokenizers for the ``text`` task, stored as the ``tokenizers`` library's JSON.

Every kind is a :class:`tokenizers.Tokenizer`, trained on the training split
only; the checkpoint keeps its JSON (a dict, no pickle) at
``checkpoint.json -> task -> tokenizer`` and :func:`from_json` rebuilds the same
object, so train, evaluate, predict and export tokenize identically.

Ids: 0 = ``<pad>``, 1 = ``<unk>`` for every kind, then the learned vocabulary.

* ``word``: words (``\\w+``) and single punctuation marks, a ``WordLevel`` model
  with the most frequent tokens (ties alphabetical).
* ``char``: every character, including spaces, ``WordLevel`` too.
* ``bpe``: byte-pair-encoding subwords trained by the library's ``BpeTrainer``
  on the same word pre-tokenization; ``vocab_size`` sets its size. (WordPiece and
  Unigram are left out: their trainers are not reproducible, see below.)
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any, Callable

import torch

from ..errors import MhsaError

PAD, UNK = "<pad>", "<unk>"
WORD_PATTERN = r"\w+|[^\w\s]"


def _lib():
    try:
        import tokenizers
    except ModuleNotFoundError:
        raise MhsaError("the text task needs the 'tokenizers' package: pip install tokenizers") from None
    return tokenizers


def _normalizer(lowercase: bool):
    n = _lib().normalizers
    return n.Sequence([n.NFC(), n.Lowercase()]) if lowercase else n.NFC()


def _word_pre():
    pt, lib = _lib().pre_tokenizers, _lib()
    # whitespace split, then words and single punctuation marks isolated
    return pt.Sequence([pt.WhitespaceSplit(), pt.Split(lib.Regex(WORD_PATTERN), behavior="isolated")])


def _char_pre():
    pt, lib = _lib().pre_tokenizers, _lib()
    return pt.Split(lib.Regex(r"[\s\S]"), behavior="isolated")  # every character, spaces included


def _counted_vocab(tok, texts: list[str], min_freq: int, vocab_size: int) -> dict[str, int]:
    """pad, unk, then pieces seen >= ``min_freq`` times by count desc, then alphabetically."""
    counts: Counter[str] = Counter()
    for text in texts:
        norm = tok.normalizer.normalize_str(text)
        counts.update(piece for piece, _ in tok.pre_tokenizer.pre_tokenize_str(norm))
    for special in (PAD, UNK):
        counts.pop(special, None)
    kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    return {t: i for i, t in enumerate([PAD, UNK] + kept[: vocab_size - 2])}


def _word_level(pre: Callable[[], Any]) -> Callable[..., Any]:
    def train(texts: list[str], vocab_size: int, lowercase: bool, min_freq: int):
        lib = _lib()
        tok = lib.Tokenizer(lib.models.WordLevel({PAD: 0, UNK: 1}, unk_token=UNK))
        tok.normalizer, tok.pre_tokenizer = _normalizer(lowercase), pre()
        tok.model = lib.models.WordLevel(_counted_vocab(tok, texts, min_freq, vocab_size), unk_token=UNK)
        return tok
    return train


def _bpe(texts: list[str], vocab_size: int, lowercase: bool, min_freq: int):
    lib = _lib()
    tok = lib.Tokenizer(lib.models.BPE(unk_token=UNK))
    tok.normalizer, tok.pre_tokenizer = _normalizer(lowercase), _word_pre()
    trainer = lib.trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_freq,
                                      special_tokens=[PAD, UNK], show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


# kind -> train(texts, vocab_size, lowercase, min_freq) -> tokenizers.Tokenizer
TOKENIZERS: dict[str, Callable[..., Any]] = {
    "word": _word_level(_word_pre),
    "char": _word_level(_char_pre),
    "bpe": _bpe,
}
# Not offered: the library's WordPiece and Unigram trainers (tokenizers 0.23) learn a
# different vocabulary on each run over the same texts (ties broken by hash order),
# which would break "same seed, same model"; its BPE trainer is reproducible (tested).


def train_tokenizer(kind: str, texts: list[str], vocab_size: int = 20000, lowercase: bool = True,
                    min_freq: int = 1):
    """Train a tokenizer of ``kind`` on ``texts`` (the training split only).

    Args:
        kind: a key of :data:`TOKENIZERS`.
        texts: training texts.
        vocab_size: at most this many ids, ``<pad>`` and ``<unk>`` included.
        lowercase: lowercase (after NFC) before splitting.
        min_freq: keep pieces (word, char) or merges (bpe) seen at least this often.

    Returns:
        A ``tokenizers.Tokenizer`` with ``<pad>`` = 0 and ``<unk>`` = 1.

    Raises:
        MhsaError: the special ids did not come out as 0 and 1.
    """
    tok = TOKENIZERS[kind](texts, vocab_size, lowercase, min_freq)
    if tok.token_to_id(PAD) != 0 or tok.token_to_id(UNK) != 1:
        raise MhsaError(f"{kind} tokenizer: <pad>/<unk> must be ids 0/1")
    return tok


def to_json(tok) -> dict[str, Any]:
    """The tokenizer as the library's JSON, a dict (stored in ``checkpoint.json``)."""
    return json.loads(tok.to_str())


def from_json(spec: dict[str, Any]):
    """Rebuild a tokenizer from :func:`to_json`'s dict.

    Raises:
        MhsaError: the dict is not a tokenizer the library can load.
    """
    try:
        return _lib().Tokenizer.from_str(json.dumps(spec))
    except Exception as exc:  # the library raises plain Exceptions on bad JSON
        raise MhsaError(f"stored tokenizer cannot be loaded: {str(exc).splitlines()[0]}") from None


def from_vocab(vocab: list[str], kind: str, lowercase: bool):
    """A ``WordLevel`` tokenizer from an older checkpoint's vocabulary list (word or char)."""
    lib = _lib()
    tok = lib.Tokenizer(lib.models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token=UNK))
    tok.normalizer = _normalizer(lowercase)
    tok.pre_tokenizer = _char_pre() if kind == "char" else _word_pre()
    return tok


def encode(tok, texts: list[str], max_len: int) -> torch.Tensor:
    """Texts -> (N, max_len) int64 ids, truncated, padded with 0 at the end.

    A text with no tokens becomes a single ``<unk>``, so no row is all padding.
    """
    x = torch.zeros(len(texts), max_len, dtype=torch.long)  # (N, T)
    for row, enc in enumerate(tok.encode_batch(list(texts), add_special_tokens=False)):
        ids = enc.ids[:max_len] or [1]
        x[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return x


def token_counts(tok, texts: list[str]) -> list[int]:
    """Number of tokens of each text (before truncation)."""
    return [len(e.ids) for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def vocab_list(tok) -> list[str]:
    """The vocabulary in id order (``<pad>``, ``<unk>``, ...)."""
    return [t for t, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]


def tokens_of(tok, text: str) -> list[str]:
    """The token strings of one text (for tests and inspection)."""
    return tok.encode(text, add_special_tokens=False).tokens

"""``order``: a synthetic sequence task that needs attention.

Each sequence holds three marker tokens A, B, C at random positions among random
filler tokens, followed by padding (lengths vary). The label is the order in
which the markers appear: one of the 3! = 6 permutations.

Why it needs attention: a bag of token + position embeddings, mean-pooled,
carries the same position sum for every sequence of a given length and the same
token multiset for every order, so an attention-free model is at chance (1/6).
A model must relate tokens to positions and compare them, which attention does.
"""

from __future__ import annotations

import itertools

import torch

from ..errors import MhsaError
from . import OptionType, Split, TaskData, TaskInfo, register

PAD, MARKERS = 0, (1, 2, 3)  # filler tokens are 4 .. vocab-1
PERMS = list(itertools.permutations(range(3)))
LABELS = ["".join("ABC"[i] for i in p) for p in PERMS]


def _generate(n: int, seq_len: int, vocab: int, min_len: int, gen: torch.Generator) -> Split:
    lengths = torch.randint(min_len, seq_len + 1, (n,), generator=gen)  # (N,)
    x = torch.randint(len(MARKERS) + 1, vocab, (n, seq_len), generator=gen)  # filler
    pos = torch.arange(seq_len)
    x[pos[None, :] >= lengths[:, None]] = PAD
    # three distinct positions inside each sequence: rank random keys, keep < length
    keys = torch.rand(n, seq_len, generator=gen).masked_fill(pos[None, :] >= lengths[:, None], 2.0)
    slots = keys.argsort(dim=1)[:, :3]  # (N, 3) position of marker A, B, C
    x.scatter_(1, slots, torch.tensor(MARKERS).expand(n, 3))
    order = slots.argsort(dim=1)  # which marker comes first, second, third
    table = {p: i for i, p in enumerate(PERMS)}
    y = torch.tensor([table[tuple(o)] for o in order.tolist()], dtype=torch.long)
    return Split(x, y)


def build(seed: int = 0, n_train: int = 6000, n_val: int = 1000, n_test: int = 2000,
          seq_len: int = 24, vocab: int = 16, min_len: int = 8) -> TaskData:
    """Generate the ``order`` task deterministically from ``seed``.

    Each split has its own generator stream, so changing ``n_test`` never changes
    the training data.
    """
    n_train, n_val, n_test, seq_len, vocab, min_len = map(int, (n_train, n_val, n_test, seq_len, vocab, min_len))
    if min(n_train, n_val, n_test) < 1:
        raise MhsaError("order task: n_train, n_val and n_test must be >= 1")
    if not 3 <= min_len <= seq_len:
        raise MhsaError(f"order task: need 3 <= min_len <= seq_len, got min_len={min_len}, seq_len={seq_len}")
    if vocab < len(MARKERS) + 2:
        raise MhsaError(f"order task: vocab must be >= {len(MARKERS) + 2}, got {vocab}")
    splits = []
    for i, n in enumerate((n_train, n_val, n_test)):
        gen = torch.Generator().manual_seed(seed * 1000 + i)
        splits.append(_generate(n, seq_len, vocab, min_len, gen))
    spec = dict(name="order", seed=seed, n_train=n_train, n_val=n_val, n_test=n_test,
                seq_len=seq_len, vocab=vocab, min_len=min_len)
    return TaskData(spec, "tokens", vocab, 0, seq_len, list(LABELS), *splits)


register(TaskInfo(
    name="order",
    description="synthetic: order of 3 markers among filler tokens (6 classes); needs attention",
    input_kind="tokens",
    size="6,000 / 1,000 / 2,000 (train/val/test)",
    classes="6",
    build=build,
    # the default model (d=256) leaves the chance plateau after 2-5 epochs (seeds 0-4); 8 reach >= 99 %
    train_defaults={"epochs": 8},
    options={
        "n_train": "training sequences (default 6000)",
        "n_val": "validation sequences (default 1000)",
        "n_test": "test sequences (default 2000)",
        "seq_len": "maximum sequence length (default 24)",
        "vocab": "vocabulary size incl. pad and markers (default 16)",
        "min_len": "minimum sequence length (default 8)",
    },
    option_types={
        "n_train": OptionType(int, 1, 1_000_000), "n_val": OptionType(int, 1, 1_000_000),
        "n_test": OptionType(int, 1, 1_000_000), "seq_len": OptionType(int, 3, 4096),
        "vocab": OptionType(int, len(MARKERS) + 2, 1_000_000), "min_len": OptionType(int, 3, 4096),
    },
))

"""Tests for the task registry and the ``order``, ``digits`` and ``text`` tasks."""

from __future__ import annotations

import dataclasses
import json
import re
import sys

import pytest
import torch

from mhsa_cli.errors import MhsaError
from mhsa_cli.tasks import TASKS, TaskData, load_task, task_from_spec
from mhsa_cli.tasks.split import stratified_split
from mhsa_cli.tasks import tokenizer as tk
from mhsa_cli.tasks.text import auto_max_len, spec_tokenizer
from mhsa_cli.tasks.tokenizer import from_vocab, to_json, token_counts, vocab_list


def tokenize(text: str) -> list[str]:
    """The word tokenizer's split, written out as a test oracle: lowercase, then the regex."""
    return re.findall(tk.WORD_PATTERN, text.lower())


def encode(texts: list[str], spec: dict) -> torch.Tensor:
    """(N, max_len) ids of new texts as a stored spec's tokenizer makes them (training's encoder)."""
    return tk.encode(spec_tokenizer(spec), texts, int(spec["max_len"]))

SPLITS = ("train", "val", "test")
SMALL_ORDER = dict(n_train=200, n_val=50, n_test=60)


def same_tensors(a: TaskData, b: TaskData) -> bool:
    return all(torch.equal(a.split(s).x, b.split(s).x) and torch.equal(a.split(s).y, b.split(s).y)
               for s in SPLITS)


def rows_of(data: TaskData) -> dict[str, set]:
    return {s: set(data.split(s)._rows) for s in SPLITS}


def assert_disjoint(groups: dict[str, set]) -> None:
    assert not groups["train"] & groups["val"]
    assert not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]


# ---------------------------------------------------------------- registry
def test_registry_has_tasks_with_option_help():
    for name in ("order", "digits", "text"):
        info = TASKS[name]
        assert info.options and all(isinstance(h, str) and h for h in info.options.values())
    assert TASKS["text"].from_spec is not None


def test_unknown_task_and_option():
    with pytest.raises(MhsaError, match="unknown task 'digit'.*did you mean 'digits'"):
        load_task("digit")
    with pytest.raises(MhsaError, match="no option 'pach'"):
        load_task("digits", pach=2)


# ---------------------------------------------------------------- stratified split
def test_stratified_split_properties():
    y = [0] * 50 + [1] * 8 + [2] * 2 + [3]  # imbalanced, one singleton class
    tr, va, te = stratified_split(y, 0.1, 0.2, seed=3)
    assert sorted(tr + va + te) == list(range(len(y)))
    assert {y[i] for i in tr} == {0, 1, 2, 3}  # every class in train
    assert len(te) == round(len(y) * 0.2) and len(va) == round(len(y) * 0.1)
    assert stratified_split(y, 0.1, 0.2, seed=3) == (tr, va, te)
    assert stratified_split(y, 0.1, 0.2, seed=4) != (tr, va, te)
    assert stratified_split(y, 0.1, 0.0, seed=3)[2] == []


# ---------------------------------------------------------------- order
def order_seqs(data: TaskData) -> dict[str, set]:
    return {s: {tuple(r) for r in data.split(s).x.tolist()} for s in SPLITS}


def test_order_disjoint_deterministic_and_from_spec():
    a = load_task("order", seed=0, **SMALL_ORDER)
    assert_disjoint(order_seqs(a))
    assert same_tensors(a, load_task("order", seed=0, **SMALL_ORDER))
    assert not torch.equal(a.train.x, load_task("order", seed=1, **SMALL_ORDER).train.x)
    assert same_tensors(a, task_from_spec(json.loads(json.dumps(a.spec))))


# ---------------------------------------------------------------- digits
@pytest.fixture(scope="module")
def digits() -> TaskData:
    return load_task("digits", seed=0)


def test_digits_shapes_and_scale(digits):
    assert digits.input_kind == "features" and digits.vocab_size == 0
    assert digits.train.x.dtype == torch.float32 and digits.train.y.dtype == torch.long
    assert digits.train.x.shape[1:] == (16, 4) and (digits.feature_dim, digits.max_len) == (4, 16)
    assert digits.labels == [str(d) for d in range(10)]
    allx = torch.cat([digits.split(s).x for s in SPLITS])
    assert allx.min() >= 0 and allx.max() <= 1 and allx.max() == 1
    assert sum(len(digits.split(s)) for s in SPLITS) == 1797
    assert set(digits.train.y.tolist()) == set(range(10))


@pytest.mark.parametrize("patch,t,f", [(1, 64, 1), (4, 4, 16)])
def test_digits_patch_sizes(digits, patch, t, f):
    data = load_task("digits", seed=0, patch=patch)
    assert data.train.x.shape[1:] == (t, f) and data.max_len == t and data.feature_dim == f
    # same images in the same order: patch layout is a pure rearrangement
    img1 = load_task("digits", seed=0, patch=1).train.x.reshape(-1, 8, 8)
    first = digits.train.x[:, 0, :].reshape(-1, 2, 2)  # top-left 2x2 patch
    assert torch.equal(first, img1[:, :2, :2])


def test_digits_disjoint_deterministic_from_spec(digits):
    assert_disjoint(rows_of(digits))
    assert same_tensors(digits, load_task("digits", seed=0))
    other = load_task("digits", seed=1)
    assert rows_of(other)["test"] != rows_of(digits)["test"]
    assert same_tensors(digits, task_from_spec(json.loads(json.dumps(digits.spec))))


@pytest.mark.parametrize("opts,msg", [
    (dict(patch=3), "patch must be one of 1, 2, 4"),
    (dict(val_fraction=0), r"val_fraction must be in \(0, 0.5\]"),
    (dict(test_fraction=0.6), r"test_fraction must be in \(0, 0.5\]"),
])
def test_digits_bad_options(opts, msg):
    with pytest.raises(MhsaError, match=msg):
        load_task("digits", **opts)


def test_digits_without_sklearn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MhsaError, match=r"needs scikit-learn: pip install 'mhsa\[data\]'"):
        load_task("digits")


# ---------------------------------------------------------------- text: files
MESSY_CSV = (
    '\ufefftext,label,extra\r\n'
    '"Hello, world! Great movie",pos,1\r\n'
    '\r\n'
    '"multi\nline, with ""quotes""",neg,2\r\n'
    'café 😀 tasty,pos,3\r\n'
    ',neg,4\r\n'  # empty text: skipped
    '   ,pos,5\r\n'  # blank text: skipped
)


def write_rows(path, rows: list[tuple[str, object]], sep: str = ",") -> str:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=sep)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return str(path)


def corpus(n: int = 60) -> list[tuple[str, object]]:
    """Imbalanced string labels: 'big' x n, 'mid' x n/4, 'tiny' x 1."""
    rows = [(f"good fine item{i} ok", "big") for i in range(n)]
    rows += [(f"bad awful thing{i}, sadly", "mid") for i in range(n // 4)]
    rows.append(("lonely rare text", "tiny"))
    return rows


@pytest.fixture()
def csv_path(tmp_path) -> str:
    return write_rows(tmp_path / "data.csv", corpus())


def vocab_of(data):
    return vocab_list(spec_tokenizer(data.spec))


def test_text_messy_csv(tmp_path):
    body = MESSY_CSV + "".join(f'"row {i}, more",{"pos" if i % 3 else "neg"},{i}\n' for i in range(30))
    p = tmp_path / "messy.csv"
    p.write_bytes(body.encode("utf-8"))
    data = load_task("text", path=str(p), seed=0)
    texts = [t for s in SPLITS for t in data.split(s)._texts]
    assert len(texts) == 33  # 3 good rows + 30; empty / blank texts skipped
    assert 'multi\nline, with "quotes"' in texts and "café 😀 tasty" in texts
    assert data.labels == ["neg", "pos"]
    assert data.train.x.dtype == torch.long and data.train.x.shape[1] == data.max_len == data.spec["max_len"]
    assert data.spec["max_len_auto"] is True
    assert vocab_of(data)[:2] == ["<pad>", "<unk>"] and data.vocab_size == len(vocab_of(data))
    word = tk.train_tokenizer("word", ["Café 😀, ok!"], min_freq=1)  # the tokenizer training uses
    assert tk.tokens_of(word, "Café 😀, ok!") == tokenize("Café 😀, ok!") == ["café", "😀", ",", "ok", "!"]


def test_text_imbalanced_labels_and_split(csv_path):
    data = load_task("text", path=csv_path, seed=0)
    assert data.labels == ["big", "mid", "tiny"]
    assert set(data.train.y.tolist()) == {0, 1, 2}  # every class in train, singleton included
    assert_disjoint(rows_of(data))
    assert sum(len(data.split(s)) for s in SPLITS) == 76
    assert len(data.val) == 8 and len(data.test) == 8


def test_text_integer_labels_sorted_as_strings(tmp_path):
    rows = [(f"w{i} alpha", 10 if i % 2 else 2) for i in range(20)] + [("z", 1)] * 3
    data = load_task("text", path=write_rows(tmp_path / "ints.csv", rows))
    assert data.labels == ["1", "10", "2"]


def test_text_deterministic_and_seed_changes_split(csv_path):
    a, b = load_task("text", path=csv_path, seed=5), load_task("text", path=csv_path, seed=5)
    assert same_tensors(a, b) and a.spec == b.spec
    c = load_task("text", path=csv_path, seed=6)
    assert rows_of(a)["test"] != rows_of(c)["test"]


def test_text_tsv_and_jsonl(tmp_path):
    rows = corpus(20)
    tsv = load_task("text", path=write_rows(tmp_path / "d.tsv", rows, sep="\t"))
    lines = [json.dumps({"text": t, "label": l, "n": 1}, ensure_ascii=False) for t, l in rows]
    jp = tmp_path / "d.jsonl"
    jp.write_text("\n" + "\n\n".join(lines) + "\n", encoding="utf-8")
    jsonl = load_task("text", path=str(jp))
    assert tsv.labels == jsonl.labels == ["big", "mid", "tiny"]
    assert same_tensors(tsv, jsonl)  # same rows in same order -> same split and tensors
    other = tmp_path / "d.txt"
    other.write_text("\n".join(lines), encoding="utf-8")
    assert same_tensors(jsonl, load_task("text", path=str(other), format="jsonl"))


def test_text_jsonl_int_labels_and_columns(tmp_path):
    p = tmp_path / "d.json"
    p.write_text("\n".join(json.dumps({"body": f"t{i} x", "y": i % 2}) for i in range(20)))
    data = load_task("text", path=str(p), text_column="body", label_column="y")
    assert data.labels == ["0", "1"]


def test_text_explicit_test_path(tmp_path, csv_path):
    test_file = write_rows(tmp_path / "test.csv", [("good unseenword ok", "big"), ("bad zzz", "mid")])
    data = load_task("text", path=csv_path, test_path=test_file, seed=0)
    assert len(data.test) == 2 and all(k == "test_path" for k, _ in data.test._rows)
    assert all(k == "path" for s in ("train", "val") for k, _ in data.split(s)._rows)
    assert sum(len(data.split(s)) for s in ("train", "val")) == 76  # test_fraction ignored
    vocab = vocab_of(data)
    assert "unseenword" not in vocab and "zzz" not in vocab
    assert data.test.x[0, :3].tolist() == [vocab.index("good"), 1, vocab.index("ok")]
    assert set(data.spec["sha256"]) == {"path", "test_path"}
    assert same_tensors(data, task_from_spec(json.loads(json.dumps(data.spec))))


def test_text_vocab_from_train_only(csv_path):
    from collections import Counter

    data = load_task("text", path=csv_path, seed=0, min_freq=1)
    vocab = vocab_of(data)
    counts = Counter(tok for t in data.train._texts for tok in tokenize(t))
    assert set(vocab[2:]) == set(counts)
    default = load_task("text", path=csv_path, seed=0)  # min_freq 2 by default: words seen once -> <unk>
    assert default.spec["min_freq"] == 2 and min(counts.values()) == 1
    assert set(vocab_of(default)[2:]) == {tok for tok, n in counts.items() if n >= 2}
    held_out = [t for t in data.test._texts if t.startswith("good")][0]
    word = held_out.split()[2]  # item<k>: unique to this test row
    assert word not in vocab
    row = data.test._texts.index(held_out)
    assert data.test.x[row, 2].item() == 1  # unk
    # most frequent first; "fine", "good", "ok" tie (once per 'big' row) -> alphabetical
    assert vocab[2:5] == ["fine", "good", "ok"]


def test_text_char_tokenizer_and_options(csv_path):
    data = load_task("text", path=csv_path, tokenizer="char", max_len=5, lowercase="false",
                     min_freq=2, max_vocab=10)
    assert data.train.x.shape[1] == 5 and data.max_len == 5
    assert len(vocab_of(data)) <= 10 and data.spec["lowercase"] is False
    assert all(len(tok) == 1 for tok in vocab_of(data)[2:])
    enc = encode(["good!"], data.spec)
    vocab = vocab_of(data)
    assert enc.tolist() == [[vocab.index(c) if c in vocab else 1 for c in "good!"]]


def test_encode_texts_truncates_and_pads(csv_path):
    data = load_task("text", path=csv_path, max_len=6)
    enc = encode(["Good fine", "good " * 20, ""], data.spec)
    vocab = vocab_of(data)
    assert enc.dtype == torch.long and enc.shape == (3, 6)
    assert enc[0].tolist() == [vocab.index("good"), vocab.index("fine"), 0, 0, 0, 0]
    assert enc[1].tolist() == [vocab.index("good")] * 6
    assert enc[2].tolist() == [1, 0, 0, 0, 0, 0]  # empty text -> a lone <unk>
    with pytest.raises(MhsaError, match="spec has no tokenizer"):
        spec_tokenizer({"name": "order"})


# ---------------------------------------------------------------- text: from_spec
def test_text_from_spec_uses_stored_vocab(csv_path):
    data = load_task("text", path=csv_path, seed=2, min_freq=1)
    spec = json.loads(json.dumps(data.spec))
    assert same_tensors(data, task_from_spec(spec))
    spec["tokenizer"] = to_json(from_vocab(["<pad>", "<unk>", "good"], "word", True))  # a rebuilt one would ignore this
    again = task_from_spec(spec)
    assert again.vocab_size == 3 and int(again.train.x.max()) <= 2
    assert vocab_of(again) == ["<pad>", "<unk>", "good"]


def test_text_older_spec_with_vocab_list_still_loads(csv_path):
    """Checkpoints from before the tokenizer JSON: spec["tokenizer"] is the kind, spec["vocab"] a list."""
    data = load_task("text", path=csv_path, seed=2, max_len=64)
    old = {k: v for k, v in json.loads(json.dumps(data.spec)).items() if k not in ("tokenizer_kind", "max_len_auto")}
    old["tokenizer"], old["vocab"] = "word", vocab_of(data)
    assert same_tensors(data, task_from_spec(old))
    assert encode(["good fine"], old).tolist() == encode(["good fine"], data.spec).tolist()


def test_text_auto_max_len_is_99th_percentile_of_train(csv_path):
    assert auto_max_len([1] * 99 + [50]) == 1 and auto_max_len([1] * 98 + [50, 50]) == 50
    assert auto_max_len([3, 1000]) == 256 and auto_max_len([]) == 1
    data = load_task("text", path=csv_path, seed=0)
    counts = sorted(token_counts(spec_tokenizer(data.spec), data.train._texts))
    assert data.max_len == counts[-(-len(counts) * 99 // 100) - 1]
    assert int(data.train.lengths.max()) <= data.max_len and data.train.ragged


def test_text_from_spec_detects_changed_or_missing_file(tmp_path):
    p = tmp_path / "data.csv"
    write_rows(p, corpus(20))
    spec = load_task("text", path=str(p)).spec
    with open(p, "a", encoding="utf-8") as fh:
        fh.write("another row,big\n")
    with pytest.raises(MhsaError, match=r"data\.csv changed since the checkpoint was made"):
        task_from_spec(spec)
    p.unlink()
    with pytest.raises(MhsaError, match=r"data\.csv not found"):
        task_from_spec(spec)


# ---------------------------------------------------------------- text: bad input
def _bad(tmp_path, name: str, content: str | bytes) -> str:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(p)


@pytest.mark.parametrize("name,content,opts,msg", [
    ("empty.csv", "", {}, r"empty\.csv is empty"),
    ("header.csv", "text,label\n\n", {}, r"header\.csv has no rows"),
    ("blank.jsonl", "\n\n", {}, r"blank\.jsonl has no rows"),
    ("cols.csv", "body,label\nhi,a\n", {}, r"cols\.csv has no text column 'text'; columns: 'body', 'label'"),
    ("cols2.csv", "text,y\nhi,a\n", {}, r"no label column 'label'; columns: 'text', 'y'"),
    ("cols.jsonl", '{"text": "a", "y": 1}\n', {},
     r"cols\.jsonl has no label column 'label'; columns: 'text', 'y'"),
    ("one.csv", "text,label\na,x\nb,x\nc,x\n", {}, r"one\.csv has a single class \('x'\)"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": oops}\n', {}, r"bad\.jsonl line 2: invalid JSON"),
    ("list.jsonl", '[1, 2]\n', {}, r"list\.jsonl line 1: expected a JSON object"),
    ("latin.csv", "text,label\ncaf\xe9,a\n".encode("latin-1"), {}, r"latin\.csv is not valid utf-8"),
    ("data.xml", "<x/>", {}, r"format of .*data\.xml"),
    ("ok.csv", "text,label\na,x\nb,y\n", {"format": "xml"}, "unknown format 'xml'"),
    ("ok.csv", "text,label\na,x\nb,y\n", {"tokenizer": "wordpiece"}, "unknown tokenizer 'wordpiece'"),
    ("ok.csv", "text,label\na,x\nb,y\n", {"val_fraction": 0.7}, r"val_fraction must be in \(0, 0.5\]"),
    ("ok.csv", "text,label\na,x\nb,y\n", {"test_fraction": 0}, r"test_fraction must be in \(0, 0.5\]"),
    ("ok.csv", "text,label\na,x\nb,y\n", {"max_len": 0}, "option 'max_len' must be >= 1, got 0"),
    ("ok.csv", "text,label\na,x\nb,y\n", {"lowercase": "maybe"}, "option 'lowercase' must be true or false, got 'maybe'"),
    ("ok.csv", "text,label\na,x\nb,y\n", {}, r"ok\.csv: too few rows \(2\)"),
    ("nolabel.csv", "text,label\na,\nb,y\n", {}, r"nolabel\.csv line 2: empty label"),
])
def test_text_bad_input(tmp_path, name, content, opts, msg):
    path = _bad(tmp_path, name, content)
    with pytest.raises(MhsaError, match=msg) as info:
        load_task("text", path=path, **opts)
    assert "\n" not in str(info.value)


def test_text_missing_file_and_path(tmp_path):
    with pytest.raises(MhsaError, match=r"nope\.csv not found"):
        load_task("text", path=str(tmp_path / "nope.csv"))
    with pytest.raises(MhsaError, match="is a directory"):
        load_task("text", path=str(tmp_path), format="csv")
    with pytest.raises(MhsaError, match="option 'path' is required"):
        load_task("text")


def test_text_test_path_unknown_label(tmp_path, csv_path):
    test_file = write_rows(tmp_path / "t.csv", [("x", "other")])
    with pytest.raises(MhsaError, match=r"t\.csv: label 'other' does not occur in"):
        load_task("text", path=csv_path, test_path=test_file)


# --------------------------------------------------------------------------- malformed rows, capped quotes, option types

@pytest.mark.parametrize("content,msg", [
    # an extra field used to become a phantom class (the label column read "y" of "x,y")
    ("text,label\na b,x\nc d,y\ne, f,x\ng h,y\n", "line 4: 3 fields, the header has 2 (an unquoted ','"),
    ("text,label\na b,x\nc d\ne f,y\n", "line 3: 1 field, the header has 2 (fields missing)"),
    # the reader notices an unclosed quote at the end of the file; the error names where it opened
    ('text,label\na b,x\n\n"c d,y\ne f,x\ng h,y\n', "line 4: a quote opened here is never closed "
                                                  "(the field runs on to line 6)"),
    ('text,label\na b,x\n"multi\nline, quoted",y\nc,d,x\n', "line 5: 3 fields"),  # lines counted across quotes
])
def test_csv_rows_with_the_wrong_number_of_fields_name_their_line(tmp_path, content, msg):
    path = _bad(tmp_path, "rows.csv", content)
    with pytest.raises(MhsaError) as info:
        load_task("text", path=path)
    assert str(info.value).startswith(f"{path} {msg}"), str(info.value)


def test_an_error_quoting_a_huge_header_is_capped(tmp_path):
    header = ",".join(f"column{i}" for i in range(500_000))  # a ~6 MB header line
    path = _bad(tmp_path, "wide.csv", header + "\n" + ",".join(["x"] * 500_000) + "\n")
    with pytest.raises(MhsaError) as info:
        load_task("text", path=path)
    msg = str(info.value)
    assert "has no text column 'text'; columns: 'column0', 'column1'" in msg
    assert len(msg) < 400 and "more characters)" in msg and "\n" not in msg


@pytest.mark.parametrize("task,opts,msg", [
    ("order", {"n_train": "abc"}, "order task: option 'n_train' must be an integer, got 'abc'"),
    ("order", {"n_train": [1, 2]}, "option 'n_train' must be an integer, got [1, 2]"),
    ("order", {"n_train": True}, "option 'n_train' must be an integer, got True"),
    ("order", {"n_train": 2.5}, "option 'n_train' must be an integer, got 2.5"),
    ("order", {"n_train": float("nan")}, "option 'n_train' must be an integer, got nan"),
    ("order", {"n_train": 10**12}, "option 'n_train' must be <= 1e+06, got 1000000000000"),
    ("order", {"seq_len": 10**9}, "option 'seq_len' must be <= 4096"),
    ("order", {"vocab": 4}, "option 'vocab' must be >= 5, got 4"),
    ("order", {"n_tarin": 5}, "task 'order' has no option 'n_tarin' (did you mean 'n_train'?)"),
    ("digits", {"patch": "x"}, "digits task: option 'patch' must be an integer"),
    ("digits", {"val_fraction": "lots"}, "option 'val_fraction' must be a number, got 'lots'"),
    ("digits", {"val_fraction": float("inf")}, "option 'val_fraction' must be a number, got inf"),
    ("text", {"path": "x.csv", "max_len": 10**8}, "text task: option 'max_len' must be <= 65536"),
    ("text", {"path": ["a.csv"]}, "text task: option 'path' must be a string, got ['a.csv']"),
])
def test_task_options_are_type_and_range_checked_before_the_builder(monkeypatch, task, opts, msg):
    from mhsa_cli import tasks

    info = tasks.TASKS[task]
    monkeypatch.setitem(tasks.TASKS, task, dataclasses.replace(info, build=lambda **kw: pytest.fail("built")))
    with pytest.raises(MhsaError) as exc:
        tasks.load_task(task, **opts)
    assert msg in str(exc.value)


def test_a_recipe_with_a_bad_task_option_fails_validation_with_its_line(tmp_path):
    from mhsa_cli.recipe import validate_recipe

    path = tmp_path / "r.yaml"
    path.write_text("name: r\nstages:\n  - name: base\n    type: train\n    task_options:\n      n_train: lots\n")
    with pytest.raises(MhsaError, match=r"line 5: stage 'base' \(train\): order task: option 'n_train' must be an "
                                        r"integer, got 'lots'"):
        validate_recipe(path, {}, tmp_path / "out")


def test_a_deeply_nested_jsonl_line_is_one_line_not_a_recursion_error(tmp_path):
    path = _bad(tmp_path, "deep.jsonl", '{"text": "a", "label": 1}\n{"text": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    with pytest.raises(MhsaError, match=r"deep\.jsonl line 2: JSON nested too deeply"):
        load_task("text", path=path)

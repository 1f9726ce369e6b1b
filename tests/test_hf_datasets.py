"""Hugging Face ``datasets`` as text data (``--data hf:...``): built in the test, never downloaded.

Oracles: the data set built here (its rows, splits and ClassLabel names) and the
``text`` task reading the same rows from a CSV file (same split, same tensors).
"""

from __future__ import annotations

import csv
import json
import os
import socket

import pytest
from typer.testing import CliRunner

from mhsa_cli.cli import app
from mhsa_cli.errors import MhsaError
from mhsa_cli.tasks import load_task, task_from_spec
from tests.conftest import assert_one_line_error

datasets = pytest.importorskip("datasets", reason="the optional 'datasets' package (extra hf) is not installed")

NAMES = ["neg", "neu", "pos"]  # ClassLabel order; the text task sorts labels (the same here)
WORDS = ["bad awful poor", "okay plain average", "good great fine"]
TINY = ["--epochs", "1", "--d-model", "16", "--heads", "2", "--d-ff", "32", "--layers", "1"]


def _part(n: int, offset: int) -> dict[str, list]:
    """n rows, classes cycling 0, 1, 2; each text a class word and a unique number."""
    return {"sentence": [f"{WORDS[i % 3].split()[i % 2]} item {i + offset}" for i in range(n)],
            "label": [i % 3 for i in range(n)]}


TRAIN, TEST = _part(60, 0), _part(15, 100)


def _features():
    return datasets.Features({"sentence": datasets.Value("string"), "label": datasets.ClassLabel(names=NAMES)})


def _save(folder, train=TRAIN, test=TEST, unlabelled=None):
    parts = {"train": datasets.Dataset.from_dict(train, features=_features()),
             "test": datasets.Dataset.from_dict(test, features=_features())}
    if unlabelled:
        parts["unlabelled"] = datasets.Dataset.from_dict(unlabelled, features=_features())
    datasets.DatasetDict(parts).save_to_disk(str(folder))
    return str(folder)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty HF_HOME, offline flags, and any socket connection fails the test."""
    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.delenv("HF_DATASETS_CACHE", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return home


@pytest.fixture
def saved(tmp_path, offline):
    return _save(tmp_path / "ds", unlabelled={"sentence": ["good item 500", "bad item 501"], "label": [-1, -1]})


def _texts_labels(split, labels):
    return split._texts, [labels[int(k)] for k in split.y]


def test_train_cli_on_saved_datasetdict_uses_its_splits_labels_and_rows(saved, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", f"hf:{saved}", "--task-opt", "text_column=sentence",
                                   "--task-opt", "test_split=test", *TINY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    spec = json.loads((out / "checkpoint.json").read_text())["task"]
    assert spec["path"] == f"hf:{saved}" and spec["test_split"] == "test" and spec["labels"] == NAMES
    data = task_from_spec(spec)  # rebuilt from the spec, as every later command does
    assert (len(data.train), len(data.val), len(data.test)) == (54, 6, 15)  # val 10 % of the 60 train rows
    assert _texts_labels(data.test, data.labels) == (TEST["sentence"], [NAMES[k] for k in TEST["label"]])
    seen = sorted(zip(*_texts_labels(data.train, data.labels))) + sorted(zip(*_texts_labels(data.val, data.labels)))
    assert sorted(seen) == sorted(zip(TRAIN["sentence"], [NAMES[k] for k in TRAIN["label"]]))
    assert [int((data.val.y == c).sum()) for c in range(3)] == [2, 2, 2]  # stratified


def test_without_test_split_same_split_and_tensors_as_the_csv_of_the_same_rows(saved, tmp_path):
    path = tmp_path / "same.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["sentence", "label"])
        w.writerows((t, NAMES[k]) for t, k in zip(TRAIN["sentence"], TRAIN["label"]))
    hf = load_task("text", seed=3, path=f"hf:{saved}", text_column="sentence")
    ref = load_task("text", seed=3, path=str(path), text_column="sentence")
    assert hf.labels == ref.labels == NAMES
    for name in ("train", "val", "test"):
        a, b = hf.split(name), ref.split(name)
        assert a._texts == b._texts and a.y.tolist() == b.y.tolist() and a.x.equal(b.x)
    assert (len(hf.train), len(hf.val), len(hf.test)) == (48, 6, 6)


def test_a_rebuild_refuses_changed_rows(saved, tmp_path):
    data = load_task("text", seed=0, path=f"hf:{saved}", text_column="sentence")
    changed = dict(TRAIN, sentence=["changed"] + TRAIN["sentence"][1:])
    _save(tmp_path / "ds2", train=changed)
    os.replace(saved, tmp_path / "old")
    os.replace(tmp_path / "ds2", saved)
    with pytest.raises(MhsaError, match="changed since the checkpoint was made"):
        task_from_spec(data.spec)


def test_name_not_in_the_cache_is_one_line_and_writes_nothing(offline, tmp_path):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", "hf:someone/not_cached", *TINY, "--out", str(out)])
    assert_one_line_error(res, "'someone/not_cached' is not in the local cache", str(offline))
    assert not out.exists()


@pytest.mark.parametrize("opts, msg", [
    (["--task-opt", "text_column=review"], "has no text column 'review'; columns: 'sentence', 'label'"),
    (["--task-opt", "text_column=sentence", "--task-opt", "label_column=stars"], "has no label column 'stars'"),
    (["--task-opt", "text_column=sentence", "--task-opt", "split=training"],
     "has no split 'training'; splits: train, test, unlabelled"),
    (["--task-opt", "text_column=sentence", "--task-opt", "test_split=unlabelled"],
     "split 'unlabelled' row 0: label -1 is not one of the 3 classes"),
    (["--task-opt", "text_column=label"], "text column 'label' holds ClassLabel"),
])
def test_bad_columns_and_splits_are_one_line(saved, tmp_path, opts, msg):
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", f"hf:{saved}", *opts, *TINY, "--out", str(out)])
    assert_one_line_error(res, msg)
    assert not out.exists()


def test_split_options_need_hf_data(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("text,label\na,x\nb,y\n")
    with pytest.raises(MhsaError, match="split is for hf: data"):
        load_task("text", path=str(path), split="train")
    with pytest.raises(MhsaError, match="test_split is for hf: data"):
        load_task("text", path=str(path), test_split="test")


def test_cached_hub_name_loads_offline(offline, tmp_path, monkeypatch):
    """A Hub name read from the datasets cache: a cache entry made locally by the csv builder,
    renamed to what a cached Hub data set 'me/tiny' looks like (datasets' layout)."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    src = tmp_path / "t.csv"
    src.write_text("text,label\n" + "".join(f"row {i},{'ab'[i % 2]}\n" for i in range(20)))
    cache = offline / "datasets"
    datasets.load_dataset("csv", data_files={"train": str(src)}, cache_dir=str(cache))
    builds = [os.path.join(r) for r, _, files in os.walk(cache / "csv") if "csv-train.arrow" in files]
    if len(builds) != 1:
        pytest.skip("this datasets version lays out its cache differently")
    os.rename(os.path.join(builds[0], "csv-train.arrow"), os.path.join(builds[0], "tiny-train.arrow"))
    config_dir = os.path.dirname(os.path.dirname(builds[0]))
    os.rename(config_dir, os.path.join(os.path.dirname(config_dir), "default"))
    os.rename(cache / "csv", cache / "me___tiny")
    data = load_task("text", path="hf:me/tiny")
    assert data.labels == ["a", "b"] and len(data.train) + len(data.val) + len(data.test) == 20
    assert sorted(data.train._texts + data.val._texts + data.test._texts) == sorted(f"row {i}" for i in range(20))


def test_predict_reads_an_hf_split_and_matches_train_test_accuracy(saved, tmp_path):
    out = tmp_path / "run"
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", f"hf:{saved}", "--task-opt", "text_column=sentence",
                              "--task-opt", "test_split=test", *TINY, "--out", str(out)])
    assert res.exit_code == 0, res.output
    test_acc = json.loads((out / "checkpoint.json").read_text())["metrics"]["test_acc"]
    preds = tmp_path / "p.jsonl"
    res = runner.invoke(app, ["predict", str(out), "--data", f"hf:{saved}", "--split", "test", "--out", str(preds)])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert [r["text"] for r in rows] == TEST["sentence"]
    assert [r["true_label"] for r in rows] == [NAMES[k] for k in TEST["label"]]
    assert sum(r["label"] == r["true_label"] for r in rows) / len(rows) == pytest.approx(test_acc)
    # an unlabelled split (ClassLabel -1): predictions, no accuracy
    res = runner.invoke(app, ["predict", str(out), "--data", f"hf:{saved}", "--split", "unlabelled"])
    assert res.exit_code == 0 and "accuracy not measured" in res.output, res.output
    res = runner.invoke(app, ["predict", str(out), "--data", f"hf:{saved}"])  # 3 splits, none named: test
    assert res.exit_code == 0 and f"({round(test_acc * 15)} of 15)" in res.output, res.output
    res = runner.invoke(app, ["predict", str(out), "--data", f"hf:{saved}", "--split", "nope"])
    assert_one_line_error(res, "has no split 'nope'; splits: train, test, unlabelled")


def test_recipe_hash_follows_the_folder_contents_and_refuses_a_missing_one(saved, tmp_path):
    from mhsa_cli.recipe import validate_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nstages:\n  - name: base\n    type: train\n    task: text\n"
                      "    task_options: {text_column: sentence}\n    epochs: 1\n")
    first = validate_recipe(recipe, {"base.data": f"hf:{saved}"}, tmp_path / "o").stages[0].hash
    again = validate_recipe(recipe, {"base.data": f"hf:{saved}"}, tmp_path / "o").stages[0].hash
    _save(tmp_path / "ds2", train=dict(TRAIN, sentence=["changed"] + TRAIN["sentence"][1:]))
    os.replace(saved, tmp_path / "old")
    os.replace(tmp_path / "ds2", saved)
    changed = validate_recipe(recipe, {"base.data": f"hf:{saved}"}, tmp_path / "o").stages[0].hash
    assert first == again != changed
    with pytest.raises(MhsaError, match="not found"):
        validate_recipe(recipe, {"base.data": f"hf:{tmp_path / 'nothing'}"}, tmp_path / "o")


def test_hf_text_task_of_imported_models_reads_the_same_splits(saved):
    """``hf-text`` (imported encoders, train --init) reads hf: data through the same reader:
    same rows in the same splits as the text task, encoded with the stored tokenizer."""
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    from mhsa_cli.tasks import hf_text

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", *sorted({w for t in WORDS for w in t.split()}), "item"])}
    t = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = json.loads(t.to_str())
    data = hf_text.build(0, tok, 0, None, path=f"hf:{saved}", text_column="sentence", test_split="test", max_len=4)
    ref = load_task("text", seed=0, path=f"hf:{saved}", text_column="sentence", test_split="test")
    assert data.labels == NAMES
    for name in ("train", "val", "test"):
        assert data.split(name)._texts == ref.split(name)._texts
        assert data.split(name).y.tolist() == ref.split(name).y.tolist()
    first = TEST["sentence"][0].split()  # e.g. "bad item 100": word, item, number (unknown)
    assert data.test.x[0].tolist() == [vocab[first[0]], vocab["item"], 1, 0]
    again = task_from_spec(json.loads(json.dumps(data.spec)))
    assert again.test.x.equal(data.test.x) and again.train.x.equal(data.train.x)


def test_a_saved_single_dataset_is_split_train(offline, tmp_path):
    folder = tmp_path / "one"
    datasets.Dataset.from_dict(TRAIN, features=_features()).save_to_disk(str(folder))
    data = load_task("text", path=f"hf:{folder}", text_column="sentence")
    assert data.labels == NAMES and len(data.train) + len(data.val) + len(data.test) == 60
    with pytest.raises(MhsaError, match="has no split 'test'; splits: train"):
        load_task("text", path=f"hf:{folder}", text_column="sentence", test_split="test")


def test_without_the_datasets_package_one_line(saved, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "datasets", None)  # import datasets -> ImportError
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "--data", f"hf:{saved}", *TINY, "--out", str(out)])
    assert_one_line_error(res, "needs the 'datasets' package", "mhsa[hf]")
    assert not out.exists()


def test_parse_names_configs_and_folders(tmp_path, monkeypatch):
    from mhsa_cli.tasks import hf_datasets as hfd

    monkeypatch.chdir(tmp_path)
    assert hfd.parse("hf:glue:sst2") == hfd.Ref("hf:glue:sst2", "glue", "sst2", False)
    assert hfd.parse("hf:owner/set") == hfd.Ref("hf:owner/set", "owner/set", None, False)
    (tmp_path / "local").mkdir()
    for given in ("hf:./local", "hf:local", f"hf:{tmp_path}/local"):
        assert hfd.parse(given) == hfd.Ref(f"hf:{tmp_path}/local", f"{tmp_path}/local", None, True)
    with pytest.raises(MhsaError, match="needs a data set name or folder"):
        hfd.parse("hf:")
    assert not hfd.is_ref("data.csv") and not hfd.is_ref(None) and hfd.is_ref("hf:x")

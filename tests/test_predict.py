"""Tests for mhsa_cli/predict: predictions equal evaluate's argmax, float and int8,
files streamed in chunks, label column use, atomic --out, one-line bad input."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from typer.testing import CliRunner

from mhsa_cli.checkpoint import load_checkpoint, load_model
from mhsa_cli.cli import app
from mhsa_cli.config import PredictConfig, build_config
from mhsa_cli.errors import MhsaError
from mhsa_cli.predict import command as pc
from mhsa_cli.predict import load_for_predict, predict, predict_texts
from mhsa_cli.tasks import task_from_spec
from mhsa_cli.train import predict_logits
from tests.conftest import assert_one_line_error, tiny_train_config

WORDS = {"pos": ["good", "great", "fine", "lovely"], "neg": ["bad", "awful", "poor", "sad"]}


def _text(i: int) -> str:
    label = "pos" if i % 2 else "neg"
    return f"{WORDS[label][i % 4]} thing, number{i % 5} " + "filler " * (i % 11), label


def write_csv(path, n, with_label=True, column="text"):
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow([column, "label"] if with_label else [column])
        for i in range(n):
            text, label = _text(i)
            w.writerow([text, label] if with_label else [text])
    return str(path)


@pytest.fixture(scope="module")
def text_ckpts(tmp_path_factory):
    """A float text checkpoint and its int8 version (tiny model, 3 epochs)."""
    from mhsa_cli.config import QuantizeConfig
    from mhsa_cli.quantize import quantize
    from mhsa_cli.train import train

    root = tmp_path_factory.mktemp("predict")
    data = write_csv(root / "train.csv", 120)
    train(tiny_train_config(root / "float", task="text", task_options={"path": data}, epochs=3, lr=3e-3))
    quantize(build_config(QuantizeConfig, {"checkpoint": str(root / "float"), "out": str(root / "int8"),
                                           "latency_time": 0}))
    return root


def cfg(**values):
    return build_config(PredictConfig, values)


@pytest.mark.parametrize("kind", ["float", "int8"])
def test_predictions_equal_argmax_of_evaluate_logits(text_ckpts, kind):
    ckpt = load_checkpoint(text_ckpts / kind)
    data = task_from_spec(ckpt.task_spec)
    model = load_model(ckpt)
    for split in (data.train, data.test):
        logits = predict_logits(model, split)  # what evaluate scores
        # int8 quantizes activations with one dynamic scale per batch, so its outputs depend on
        # which rows share a batch: same batches as evaluate's (256, by length) there
        probs = predict_texts(load_for_predict(text_ckpts / kind), split._texts,
                              batch_size=5 if kind == "float" else 256)
        assert torch.equal(probs.argmax(-1), logits.argmax(-1))
        assert torch.allclose(probs, logits.softmax(-1), atol=1e-5)


def test_file_streamed_in_chunks_same_as_whole_and_label_column_gives_accuracy(text_ckpts, tmp_path, monkeypatch):
    data = write_csv(tmp_path / "new.csv", 50)
    whole = predict(cfg(checkpoint=str(text_ckpts / "float"), data=data, out=str(tmp_path / "a.jsonl")))
    monkeypatch.setattr(pc, "CHUNK", 7)
    chunked = predict(cfg(checkpoint=str(text_ckpts / "float"), data=data, out=str(tmp_path / "b.jsonl")))
    rows, other = ([json.loads(line) for line in (tmp_path / n).read_text().splitlines()]
                   for n in ("a.jsonl", "b.jsonl"))
    assert len(rows) == len(other) == 50 and whole.rows == chunked.rows == 50
    for r, o in zip(rows, other):  # other batches: float sums differ in the last bits only
        assert (r["line"], r["label"]) == (o["line"], o["label"])
        assert all(abs(r["probs"][c] - o["probs"][c]) < 1e-5 for c in r["probs"])
    assert [r["line"] for r in rows] == list(range(2, 52))  # file order, header on line 1
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 and r["label"] == max(r["probs"], key=r["probs"].get)
               for r in rows)
    truth = [_text(i)[1] for i in range(50)]
    assert whole.label_column == "label" and "used to measure accuracy" in whole.label_note
    assert whole.accuracy == pytest.approx(sum(r["label"] == t for r, t in zip(rows, truth)) / 50)
    assert [r["true_label"] for r in rows] == truth
    ignored = predict(cfg(checkpoint=str(text_ckpts / "float"), data=data, ignore_labels=True))
    assert ignored.accuracy is None and "ignored" in ignored.label_note and ignored.rows == 50


def test_csv_out_and_file_without_labels(text_ckpts, tmp_path):
    data = write_csv(tmp_path / "new.csv", 9, with_label=False)
    r = predict(cfg(checkpoint=str(text_ckpts / "int8"), data=data, out=str(tmp_path / "p.csv"), show=3))
    assert r.accuracy is None and "no label column" in r.label_note and len(r.shown) == 3 and r.kind == "int8"
    with open(tmp_path / "p.csv", newline="", encoding="utf-8") as fh:
        out = list(csv.DictReader(fh))
    assert len(out) == 9 and out[0]["text"] == _text(0)[0]
    assert set(out[0]) == {"line", "text", "label", "probability", "prob_neg", "prob_pos"}


def test_cli_text_repeatable_with_commas(text_ckpts):
    result = CliRunner().invoke(app, ["predict", str(text_ckpts / "float"), "--text", "good thing, number1",
                                      "--text", "bad, awful"])
    assert result.exit_code == 0, result.output
    assert "good thing, number1" in result.output and "bad, awful" in result.output
    probs = predict_texts(load_for_predict(text_ckpts / "float"), ["good thing, number1", "bad, awful"])
    labels = load_checkpoint(text_ckpts / "float").task_spec["labels"]
    assert [labels[k] for k in probs.argmax(-1).tolist()] == \
        [line.split("│")[3].strip() for line in result.output.splitlines() if "number1" in line or "bad, awful" in line]


BAD_FILES = [
    ("nocol.csv", b"body,label\nhello,pos\n", "has no text column 'text'"),
    ("empty.csv", b"text,label\nhello,pos\n  ,neg\n", "line 3: empty text"),
    ("latin.csv", b"text,label\ncaf\xe9 ok,pos\n", "not valid utf-8"),
    ("nocol.jsonl", b'{"body": "x"}\n', "has no text column 'text'"),
]


@pytest.mark.parametrize("name,content,msg", BAD_FILES)
def test_bad_files_are_one_line_and_write_nothing(text_ckpts, tmp_path, name, content, msg):
    path = tmp_path / name
    path.write_bytes(content)
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["predict", str(text_ckpts / "float"), "--data", str(path), "--out", str(out)])
    assert_one_line_error(result, msg)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


def test_other_bad_input(text_ckpts, tiny_ckpt, tmp_path):
    run = lambda *args: CliRunner().invoke(app, ["predict", *map(str, args)])
    assert_one_line_error(run(text_ckpts / "float"), "nothing to predict")
    assert_one_line_error(run(text_ckpts / "float", "--text", "  "), "--text number 1 is empty")
    assert_one_line_error(run(tiny_ckpt, "--text", "hi"), "predict takes text", "'order'")
    (tmp_path / "taken.csv").write_text("x")
    assert_one_line_error(run(text_ckpts / "float", "--text", "hi", "--out", tmp_path / "taken.csv"), "exists")
    assert (tmp_path / "taken.csv").read_text() == "x"
    assert_one_line_error(run(text_ckpts / "float", "--text", "hi", "--out", tmp_path / "p.txt"), ".csv or .jsonl")
    export = tmp_path / "export"
    export.mkdir()
    (export / "model.onnx").write_bytes(b"")
    # (the test used to assert "no ONNX runtime is registered": untrue, ORT is; the folder lacks export.json)
    assert_one_line_error(run(export, "--text", "hi"), "holds ONNX files but no export.json: not an export folder")


def test_a_failure_mid_stream_leaves_no_file(text_ckpts, tmp_path, monkeypatch):
    data = write_csv(tmp_path / "new.csv", 30)
    monkeypatch.setattr(pc, "CHUNK", 8)
    calls = {"n": 0}
    real = pc.predict_texts

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real(*a, **k)

    monkeypatch.setattr(pc, "predict_texts", flaky)
    with pytest.raises(RuntimeError):
        predict(cfg(checkpoint=str(text_ckpts / "float"), data=data, out=str(tmp_path / "p.csv")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.csv"]


def test_export_folder_predicts_through_onnx_runtime(text_ckpts, tmp_path):
    """fp32 ONNX gives the float checkpoint's probabilities; int8 ONNX runs too."""
    pytest.importorskip("onnxruntime")
    from mhsa_cli.config import ExportConfig
    from mhsa_cli.export import export

    out = tmp_path / "export"
    export(build_config(ExportConfig, {"checkpoint": str(text_ckpts / "float"), "out": str(out)}))
    texts = [_text(i)[0] for i in range(40)]
    torch_probs = predict_texts(load_for_predict(text_ckpts / "float"), texts)
    fp32 = load_for_predict(out, precision="fp32")
    assert fp32.runtime == "onnxruntime" and fp32.kind == "onnx fp32"
    assert torch.allclose(predict_texts(fp32, texts), torch_probs, atol=1e-4)
    int8 = predict(cfg(checkpoint=str(out), precision="int8", text=texts[:5]))
    assert int8.kind == "onnx int8" and int8.rows == 5
    assert all(abs(sum(p.probs) - 1) < 1e-4 for p in int8.shown)
    result = CliRunner().invoke(app, ["predict", str(text_ckpts / "float"), "--precision", "int8", "--text", "hi"])
    assert_one_line_error(result, "--precision is for export folders")


def test_predict_reader_and_text_task_name_an_unreadable_data_file_alike(tmp_path):
    from mhsa_cli.predict import reader
    from mhsa_cli.tasks import text_files

    missing, folder = str(tmp_path / "nope.csv"), str(tmp_path)
    for path, want in [(missing, f"data file {missing} not found"),
                       (folder, f"data file {folder} is a directory, not a file")]:
        for read in (lambda p: reader.scan(p, "csv", "text", "label"),
                     lambda p: text_files.read_rows(p, {"format": "csv", "text_column": "text",
                                                        "label_column": "label"})):
            with pytest.raises(MhsaError) as err:
                read(path)
            assert str(err.value) == want


SPILLED = [  # files whose rows training and predict must both refuse, with the same line
    ("spill.csv", "text,label\ngood,pos\ngreat food, cold service,neg\n",
     "line 3: 3 fields, the header has 2 (an unquoted ','"),
    ("two.tsv", "text\tlabel\na\tpos\nb\tpos\tneg\n", "line 3: 3 fields, the header has 2 (an unquoted '\\t'"),
    ("short.csv", "text,label\na,pos\nb\n", "line 3: 1 field, the header has 2 (fields missing)"),
    ("quote.csv", 'text,label\na,pos\n\n"b,neg\nc,pos\n', "line 4: a quote opened here is never closed "
                                                         "(the field runs on to line 5)"),
    ("bad.jsonl", '{"text": "a", "label": "pos"}\n{"text": oops}\n', "line 2: invalid JSON"),
    ("latin.csv", b"text,label\na,pos\ncaf\xe9,pos\n", "is not valid utf-8 (line 3, byte 20)"),  # 11 + 6 + 3 bytes before \xe9
]


@pytest.mark.parametrize("name,content,msg", SPILLED)
def test_one_reader_refuses_a_bad_row_in_training_and_predict_alike(text_ckpts, tmp_path, name, content, msg):
    from mhsa_cli.tasks.text_files import read_rows

    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    with pytest.raises(MhsaError) as trained:
        read_rows(str(path), {"format": "auto", "text_column": "text", "label_column": "label"})
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(app, ["predict", str(text_ckpts / "float"), "--data", str(path), "--out", str(out)])
    assert_one_line_error(result, msg)
    assert msg in str(trained.value) and result.output.strip() == f"error: {trained.value}"
    assert not out.exists()


def test_a_one_column_row_spilling_into_two_fields_is_refused_not_cut(text_ckpts, tmp_path):
    # predict used to read this row as "great food" (csv's extra fields were dropped)
    path = tmp_path / "one.csv"
    path.write_text("text\ngood\ngreat food, cold service\n", encoding="utf-8")
    for args in (["--data", str(path)], ["--data", str(path), "--format", "csv", "--out", str(tmp_path / "p.jsonl")]):
        result = CliRunner().invoke(app, ["predict", str(text_ckpts / "float"), *args])
        assert_one_line_error(result, f"{path} line 3: 2 fields, the header has 1 (an unquoted ',' in a text? "
                                      "quote the field)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.csv"]


def test_a_one_column_file_with_a_quoted_comma_predicts_the_whole_text(text_ckpts, tmp_path):
    path = tmp_path / "one.csv"
    path.write_text('text\ngood\n"great food, cold service"\n', encoding="utf-8")
    r = predict(cfg(checkpoint=str(text_ckpts / "float"), data=str(path), show=5))
    assert [(p.line, p.text) for p in r.shown] == [(2, "good"), (3, "great food, cold service")]
    assert r.label_column is None and "no label column 'label'" in r.label_note


def test_out_that_is_the_data_file_is_refused_even_with_force(text_ckpts, tmp_path):
    data = write_csv(tmp_path / "new.csv", 5)
    content = (tmp_path / "new.csv").read_bytes()
    (tmp_path / "link.csv").symlink_to(tmp_path / "new.csv")
    for out in (data, tmp_path / "link.csv"):
        result = CliRunner().invoke(app, ["predict", str(text_ckpts / "float"), "--data", data, "--out", str(out),
                                          "--force"])
        assert_one_line_error(result, "is the --data file")
    assert (tmp_path / "new.csv").read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "new.csv"]


def test_export_folder_whose_labels_are_missing_repeated_or_miscounted_is_one_line(text_ckpts, tmp_path):
    """Each was a traceback (KeyError, a shape RuntimeError) or silently used; now one line, no file."""
    import shutil

    from mhsa_cli.config import ExportConfig
    from mhsa_cli.export import export

    good = tmp_path / "export"
    export(build_config(ExportConfig, {"checkpoint": str(text_ckpts / "float"), "out": str(good), "int8": False}))
    cases = {"no labels": (lambda m: (m.pop("labels"), m["task"].pop("labels")), "has no 'labels'"),
             "repeated": (lambda m: m.update(labels=["neg", "neg"]) or m["task"].update(labels=["neg", "neg"]),
                          "names class 'neg' twice"),
             "3 of 2": (lambda m: m.update(labels=list("abc")) or m["task"].update(labels=list("abc")),
                        "names 3 classes but the model has 2")}
    for name, (edit, fragment) in cases.items():
        bad = tmp_path / name
        shutil.copytree(good, bad)
        meta = json.loads((bad / "export.json").read_text())
        edit(meta)
        (bad / "export.json").write_text(json.dumps(meta))
        out = tmp_path / f"{name}.csv"
        result = CliRunner().invoke(app, ["predict", str(bad), "--text", "good thing", "--out", str(out)])
        assert_one_line_error(result, fragment)
        assert not out.exists()


def test_a_model_whose_scores_disagree_with_its_labels_is_one_line(text_ckpts):
    loaded = load_for_predict(text_ckpts / "float")
    loaded.call = lambda x: torch.zeros(len(x), 5)  # a swapped model with dynamic class axis
    with pytest.raises(MhsaError, match="gives 5 scores per row but has 2 labels"):
        predict_texts(loaded, ["good thing"])


def test_csv_with_bom_and_crlf_predicts_like_a_plain_file_and_unseen_labels_are_reported(text_ckpts, tmp_path):
    """Documented success: a spreadsheet's utf-8-sig CSV with CRLF lines reads as the plain file."""
    plain = write_csv(tmp_path / "plain.csv", 12)
    rows = (tmp_path / "plain.csv").read_text(encoding="utf-8").splitlines()
    rows[3] = rows[3].rsplit(",", 1)[0] + ",meh"  # a label the model never saw
    (tmp_path / "plain.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbf" + "\r\n".join(rows).encode() + b"\r\n")
    ckpt = str(text_ckpts / "float")
    a = predict(cfg(checkpoint=ckpt, data=plain, show=20))
    b = predict(cfg(checkpoint=ckpt, data=str(tmp_path / "excel.csv"), show=20))
    assert b.label_column == "label" and b.rows == a.rows == 12
    assert [(p.line, p.text, p.label, p.true_label) for p in b.shown] == \
        [(p.line, p.text, p.label, p.true_label) for p in a.shown]
    assert b.unknown_labels == 1 and any("1 rows have a label the model does not know" in n for n in b.notes)

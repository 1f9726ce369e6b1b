"""imports/: Hugging Face BERT / RoBERTa / DistilBERT folders -> mhsa checkpoints.

Offline: tiny random models are built from configs with ``transformers`` and saved
with safetensors, tokenizers are trained here with ``tokenizers``. The oracle is
transformers' own forward on the same padded batch.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers (dev extra) is not installed")

from typer.testing import CliRunner  # noqa: E402

from mhsa_cli.checkpoint import load_checkpoint, load_model  # noqa: E402
from mhsa_cli.cli import app  # noqa: E402
from mhsa_cli.tasks.hf_text import encode  # noqa: E402

from .conftest import assert_one_line_error  # noqa: E402

runner = CliRunner()
WORDS = ("good fine nice bad poor sad the a movie film plot actor was is very not "
         "really quite story end").split()  # filler; the label word (great / awful) is inserted
TOL = 1e-4


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def corpus(n: int = 80, seed: int = 0) -> list[tuple[str, str]]:
    """(text, label) rows: label pos/neg from the first sentiment word; lengths 2-14 words."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        k = int(torch.randint(2, 15, (1,), generator=g))
        words = [WORDS[int(j)] for j in torch.randint(0, len(WORDS), (k,), generator=g)]
        label = "pos" if i % 2 else "neg"
        words.insert(int(torch.randint(0, k, (1,), generator=g)), "great" if label == "pos" else "awful")
        rows.append((" ".join(words), label))
    return rows


def train_tokenizer(kind: str):
    """A tiny WordPiece ([CLS] x [SEP], pad 0) or BPE (<s> x </s>, pad 1) tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    texts = [t for t, _ in corpus(200, seed=1)]
    if kind == "wordpiece":
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        trainer = trainers.WordPieceTrainer(vocab_size=60, special_tokens=specials)
        bos, eos = "[CLS]", "[SEP]"
    else:
        specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        trainer = trainers.BpeTrainer(vocab_size=60, special_tokens=specials)
        bos, eos = "<s>", "</s>"
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))])
    return tok


FAMILIES = {  # name -> (config class, model class, base class, tokenizer, config kwargs)
    "bert": ("BertConfig", "BertForSequenceClassification", "BertModel", "wordpiece",
             dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                  max_position_embeddings=40)),
    "roberta": ("RobertaConfig", "RobertaForSequenceClassification", "RobertaModel", "bpe",
                dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                     max_position_embeddings=42, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                     hidden_act="gelu_new", layer_norm_eps=1e-5)),
    "distilbert": ("DistilBertConfig", "DistilBertForSequenceClassification", "DistilBertModel", "wordpiece",
                   dict(dim=32, n_layers=2, n_heads=4, hidden_dim=37, max_position_embeddings=40)),
}


def make_hf(family: str, folder, base: bool = False, vocab: int = 64, num_labels: int = 3):
    """Save a tiny random HF model (every tensor perturbed, so each one matters) + tokenizer.json."""
    cfg_cls, cls, base_cls, tok_kind, kw = FAMILIES[family]
    config = getattr(transformers, cfg_cls)(vocab_size=vocab, num_labels=num_labels,
                                            id2label={i: f"c{i}" for i in range(num_labels)}, **kw)
    torch.manual_seed(0)
    model = getattr(transformers, base_cls if base else cls)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(folder)
    tok = train_tokenizer(tok_kind)
    tok.save(str(folder / "tokenizer.json"))
    return model, tok


def batch(folder, pad_id: int, max_len: int = 16) -> torch.Tensor:
    """A right-padded batch of varied lengths, some truncated, tokenized with the folder's tokenizer."""
    tok = json.loads((folder / "tokenizer.json").read_text())
    texts = [t for t, _ in corpus(12, seed=3)] + ["good", " ".join(WORDS)]
    return encode(texts, tok, max_len, pad_id)  # (14, max_len)


def hf_logits(model, x: torch.Tensor, pad_id: int) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=x, attention_mask=(x != pad_id).long()).logits


@pytest.fixture(scope="module", params=list(FAMILIES))
def imported(request, tmp_path_factory):
    """(family, HF model, HF folder, imported checkpoint folder)."""
    tmp = tmp_path_factory.mktemp(request.param)
    model, _ = make_hf(request.param, tmp / "hf")
    result = invoke("import", tmp / "hf", "--out", tmp / "ckpt")
    assert result.exit_code == 0, result.output
    return request.param, model, tmp / "hf", tmp / "ckpt"


def test_imported_logits_match_transformers(imported):
    family, hf, folder, ckpt = imported
    model = load_model(ckpt)
    pad = model.config.pad_id
    x = batch(folder, pad)
    assert (x == pad).any() and (x != pad).all(dim=1).any()  # padded and full rows
    with torch.no_grad():
        gap = float((model(x) - hf_logits(hf, x, pad)).abs().max())
    assert gap <= TOL, f"{family}: max |logit gap| {gap}"
    meta = load_checkpoint(ckpt).meta
    assert meta["task"]["labels"] == ["c0", "c1", "c2"]
    assert meta["task"]["tokenizer"] == json.loads((folder / "tokenizer.json").read_text())
    assert meta["extra"]["source"]["fresh"] == []
    assert meta["lineage"][0]["operation"] == "import"
    assert "note:" not in invoke("import", folder, "--out", ckpt, "--force").output  # nothing to warn about


def test_switches_follow_the_family(imported):
    family, _, _, ckpt = imported
    c = load_model(ckpt).config
    assert (c.norm, c.pooling, c.embed_norm, c.final_norm) == ("post", "first", True, False)
    want = {"bert": (2, 0, 0, "tanh", "gelu", 1e-12), "roberta": (2, 2, 1, "tanh", "gelu_tanh", 1e-5),
            "distilbert": (0, 0, 0, "relu", "gelu", 1e-12)}[family]
    assert (c.type_vocab_size, c.pos_offset, c.pad_id, c.pooler, c.activation, c.ln_eps) == want
    assert c.heads == [4, 4] and c.head_dim == 8 and c.d_ff == 37 and c.max_len == 40


def test_pruned_half_heads_shapes_reload_and_parity(imported, tmp_path):
    """Prune 50 % of heads by gradient on the user's data; the pruned model equals the gated original."""
    from mhsa_cli.prune.surgery import gates_for

    family, _, folder, _ = imported
    csv = tmp_path / "data.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in corpus(60)))
    withdata = tmp_path / "withdata"
    r = invoke("import", folder, "--data", csv, "--task-opt", "max_len=16", "--out", withdata)
    assert r.exit_code == 0, r.output
    r = invoke("prune", withdata, "--ratio", 0.5, "--device", "cpu", "--batch-size", 16, "--out", tmp_path / "p")
    assert r.exit_code == 0, r.output
    pruned, original = load_model(tmp_path / "p"), load_model(withdata)
    assert sum(pruned.config.heads) == 4 and load_checkpoint(tmp_path / "p").meta["model"]["heads"] == pruned.heads
    for block, h in zip(pruned.blocks, pruned.heads):
        if h:
            assert block.attn.q.weight.shape == (8 * h, 32) and block.attn.o.weight.shape == (32, 8 * h)
    removed = json.loads((tmp_path / "p" / "head_importance.json").read_text())["removed"]
    x = batch(folder, original.config.pad_id)
    with torch.no_grad():
        ref = original(x, features=True, head_gates=gates_for(original.heads, dict(enumerate(removed)))).logits
        assert float((pruned(x) - ref).abs().max()) <= TOL
    # quantize the pruned model: real int8 Linear kernels, logits close to the float ones
    r = invoke("quantize", tmp_path / "p", "--latency-time", 0, "--out", tmp_path / "q")
    assert r.exit_code == 0, r.output
    q = load_model(tmp_path / "q")
    assert q.blocks[0].ff1.weight().dtype == torch.qint8 and q.pooler.weight().dtype == torch.qint8
    with torch.no_grad():
        assert (q(x).argmax(-1) == pruned(x).argmax(-1)).float().mean() >= 0.8
        assert float((q(x) - pruned(x)).abs().max()) < 0.2 * float(pruned(x).abs().max()) + 0.05


def test_distilled_student_keeps_the_family_and_starts_from_teacher_layers(imported, tmp_path):
    family, _, folder, _ = imported
    csv = tmp_path / "data.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in corpus(60)))
    r = invoke("import", folder, "--data", csv, "--out", tmp_path / "t")
    assert r.exit_code == 0, r.output
    teacher = load_model(tmp_path / "t")
    from mhsa_cli.config import DistillConfig, build_config
    from mhsa_cli.distill.student import init_from_teacher, layer_map, student_config

    cfg = build_config(DistillConfig, {"teacher": str(tmp_path / "t"), "layers": 1, "init_from_teacher": True})
    s_cfg = student_config(teacher.config, cfg)
    assert s_cfg.style() == teacher.config.style() and s_cfg.d_model == 32
    from mhsa_cli.model import build_model

    student = build_model(s_cfg, seed=0)
    init_from_teacher(student, teacher, layer_map(1, 2))
    assert torch.equal(student.blocks[0].ff1.weight, teacher.blocks[1].ff1.weight)
    r = invoke("distill", "--teacher", tmp_path / "t", "--layers", 1, "--init-from-teacher", "--epochs", 1,
               "--batch-size", 16, "--device", "cpu", "--out", tmp_path / "s")
    assert r.exit_code == 0, r.output
    s = load_model(tmp_path / "s")
    assert s.config.heads == [4] and s.config.style() == teacher.config.style()


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_base_model_gets_a_fresh_seeded_classifier(family, tmp_path):
    hf, _ = make_hf(family, tmp_path / "hf", base=True)
    for out, seed in (("a", 0), ("b", 0), ("c", 1)):
        r = invoke("import", tmp_path / "hf", "--labels", "x,y", "--seed", seed, "--out", tmp_path / out)
        assert r.exit_code == 0, r.output
    a, b, c = (load_model(tmp_path / n) for n in "abc")
    assert a.head.weight.shape == (2, 32) and load_checkpoint(tmp_path / "a").meta["task"]["labels"] == ["x", "y"]
    assert torch.equal(a.head.weight, b.head.weight) and not torch.equal(a.head.weight, c.head.weight)
    fresh = load_checkpoint(tmp_path / "a").meta["extra"]["source"]["fresh"]
    assert fresh == (["head"] if family == "bert" else ["head", "pooler"])  # BERT keeps its pooler
    x = batch(tmp_path / "hf", 0)
    with torch.no_grad():  # the encoder is the HF encoder: last hidden states at real tokens agree
        ours = a(x, features=True).hidden_states[-1]
        theirs = hf(input_ids=x, attention_mask=(x != 0).long()).last_hidden_state
        real = x != 0
        assert float((ours - theirs)[real].abs().max()) <= TOL
        if family == "bert":
            torch.testing.assert_close(torch.tanh(a.pooler(ours[:, 0])), hf(input_ids=x, attention_mask=real.long()).pooler_output,
                                       atol=TOL, rtol=0)


def test_pickle_weights_beside_safetensors_are_never_opened(tmp_path, monkeypatch):
    make_hf("bert", tmp_path / "hf")
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes(b"not really a pickle")

    def boom(*a, **k):
        raise AssertionError("a pickle loader was called")

    monkeypatch.setattr(torch, "load", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(pickle, "loads", boom)
    r = invoke("import", tmp_path / "hf", "--out", tmp_path / "ckpt")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "ckpt").meta["extra"]["source"]["weights"] == ["model.safetensors"]


def _bad(tmp_path, *fragments, extra=()):
    r = invoke("import", tmp_path / "hf", *extra, "--out", tmp_path / "out")
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_pickle_only_folder_is_refused(tmp_path, monkeypatch):
    make_hf("bert", tmp_path / "hf")
    (tmp_path / "hf" / "model.safetensors").rename(tmp_path / "hf" / "pytorch_model.bin")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called"))
    _bad(tmp_path, "pytorch_model.bin", "safetensors")


def test_folder_without_config_or_weights_is_refused(tmp_path):
    (tmp_path / "hf").mkdir()
    _bad(tmp_path, "no config.json")
    (tmp_path / "hf" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    _bad(tmp_path, "no weights")


def test_unsupported_architecture_names_the_supported_ones(tmp_path):
    cfg = transformers.GPT2Config(n_embd=32, n_layer=1, n_head=4, vocab_size=64, n_positions=16)
    transformers.GPT2Model(cfg).save_pretrained(tmp_path / "hf")
    _bad(tmp_path, "unsupported architecture GPT2Model", "BertForSequenceClassification", "DistilBertModel")


def test_tokenizer_larger_than_the_embedding_is_refused(tmp_path):
    make_hf("bert", tmp_path / "hf", vocab=40)  # the tokenizer has 60 tokens
    _bad(tmp_path, "tokenizer.json has 60 tokens", "40 rows")


def test_wrong_tensor_shape_is_refused(tmp_path):
    make_hf("bert", tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    (tmp_path / "hf" / "config.json").write_text(json.dumps({**cfg, "intermediate_size": 40}))
    _bad(tmp_path, "intermediate.dense.weight", "(37, 32)", "(40, 32)")


def test_bring_your_own_recipe_needs_the_folder(tmp_path):
    r = invoke("run", "recipes/bring-your-own.yaml", "--dry-run", "--out", tmp_path / "out")
    assert_one_line_error(r, "--set import.path=FOLDER")
    (tmp_path / "hf").mkdir()
    r = invoke("run", "recipes/bring-your-own.yaml", "--set", f"import.path={tmp_path / 'hf'}", "--dry-run",
               "--out", tmp_path / "out")
    assert_one_line_error(r, "data file data.csv not found", "--set import.data=FILE")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_bring_your_own_recipe_runs_on_a_tiny_saved_model(tmp_path):
    """import -> finetune -> prune -> distill -> quantize -> export -> bench on a tiny RoBERTa base model."""
    make_hf("roberta", tmp_path / "hf", base=True)
    csv = tmp_path / "data.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in corpus(60)))
    sets = {"import.path": tmp_path / "hf", "import.data": csv, "import.task_options.max_len": 16,
            "finetuned.epochs": 1, "pruned.finetune_epochs": 0, "student.epochs": 1,
            "bench.min_time": 0.01, "bench.min_repeats": 2, "bench.warmup": 1, "bench.batch_sizes": 2,
            **{f"{q}.latency_time": 0 for q in ("finetuned-int8", "pruned-int8", "student-int8")}}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    r = invoke("run", "recipes/bring-your-own.yaml", *args, "--out", tmp_path / "out")
    assert r.exit_code == 0, r.output
    out = tmp_path / "out"
    heads = {s: load_checkpoint(out / s).meta["model"]["heads"] for s in ("import", "finetuned", "pruned", "student")}
    assert heads == {"import": [4, 4], "finetuned": [4, 4], "pruned": heads["pruned"], "student": [4]}
    assert sum(heads["pruned"]) == 4
    assert load_checkpoint(out / "pruned-int8").kind == "int8"
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert len(rows) == 12  # 6 torch rows + ORT fp32 and int8 of the 3 float models
    assert json.loads((out / "pruned-onnx" / "export.json").read_text())["checks"]["parity"]["max_abs_gap"] <= TOL
    assert load_checkpoint(out / "student").meta["model"]["pad_id"] == 1  # RoBERTa's switches survive


def test_labels_rename_the_classifier_to_match_a_data_file(tmp_path):
    """id2label c0, c1 -> --labels neg,pos keeps the trained classifier for a neg/pos file; without
    --labels the file's labels differ and the classifier is fresh."""
    hf, _ = make_hf("distilbert", tmp_path / "hf", num_labels=2)
    csv = tmp_path / "data.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in corpus(40)))
    r = invoke("import", tmp_path / "hf", "--data", csv, "--labels", "neg,pos", "--out", tmp_path / "kept")
    assert r.exit_code == 0, r.output
    r = invoke("import", tmp_path / "hf", "--data", csv, "--out", tmp_path / "fresh")
    assert r.exit_code == 0, r.output
    kept, fresh = load_model(tmp_path / "kept"), load_model(tmp_path / "fresh")
    assert torch.equal(kept.head.weight, hf.classifier.weight)
    assert load_checkpoint(tmp_path / "kept").meta["task"]["labels"] == ["neg", "pos"]
    assert not torch.equal(fresh.head.weight, hf.classifier.weight)
    assert load_checkpoint(tmp_path / "fresh").meta["extra"]["source"]["fresh"] == ["head"]
    assert "test_acc" in load_checkpoint(tmp_path / "kept").meta["metrics"]


def test_info_summarises_the_stored_tokenizer(imported):
    family, _, _, ckpt = imported
    r = invoke("info", ckpt)
    assert r.exit_code == 0, r.output
    kind = "BPE" if family == "roberta" else "WordPiece"
    assert f"{kind}, 60 tokens" in r.output and '"vocab"' not in r.output


def test_sharded_safetensors_are_read_through_their_index(tmp_path):
    hf, _ = make_hf("bert", tmp_path / "one")
    hf.save_pretrained(tmp_path / "hf", max_shard_size="40KB")
    (tmp_path / "hf" / "tokenizer.json").write_bytes((tmp_path / "one" / "tokenizer.json").read_bytes())
    shards = sorted(p.name for p in (tmp_path / "hf").glob("*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    r = invoke("import", tmp_path / "hf", "--out", tmp_path / "ckpt")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "ckpt").meta["extra"]["source"]["weights"] == shards
    x = batch(tmp_path / "hf", 0)
    with torch.no_grad():
        assert float((load_model(tmp_path / "ckpt")(x) - hf_logits(hf, x, 0)).abs().max()) <= TOL


@pytest.mark.gpu
def test_imported_model_runs_the_same_on_cuda(imported):
    _, hf, folder, ckpt = imported
    model = load_model(ckpt)
    x = batch(folder, model.config.pad_id)
    with torch.no_grad():
        on_gpu = model.cuda()(x.cuda()).cpu()
        assert float((on_gpu - hf_logits(hf, x, model.config.pad_id)).abs().max()) <= TOL


def test_a_tokenizer_without_special_tokens_gets_a_note(tmp_path):
    make_hf("bert", tmp_path / "hf")
    tok = json.loads((tmp_path / "hf" / "tokenizer.json").read_text())
    (tmp_path / "hf" / "tokenizer.json").write_text(json.dumps({**tok, "post_processor": None}))
    r = invoke("import", tmp_path / "hf", "--out", tmp_path / "ckpt")
    assert r.exit_code == 0 and "adds no special tokens" in r.output, r.output


@pytest.fixture(scope="module")
def with_data(imported, tmp_path_factory):
    """(family, HF model, HF folder, checkpoint imported with a data file, its 50 %-pruned child, removed heads)."""
    family, hf, folder, _ = imported
    tmp = tmp_path_factory.mktemp(f"{family}-data")
    # labels c0 / c1 are among the model's (c0, c1, c2): its trained classifier is kept
    (tmp / "data.csv").write_text("text,label\n" + "".join(f"{t},{'c1' if lab == 'pos' else 'c0'}\n"
                                                          for t, lab in corpus(60)))
    r = invoke("import", folder, "--data", tmp / "data.csv", "--task-opt", "max_len=16", "--out", tmp / "ckpt")
    assert r.exit_code == 0, r.output
    r = invoke("prune", tmp / "ckpt", "--ratio", 0.5, "--device", "cpu", "--batch-size", 16, "--out", tmp / "p")
    assert r.exit_code == 0, r.output
    removed = json.loads((tmp / "p" / "head_importance.json").read_text())["removed"]
    return family, hf, folder, tmp / "ckpt", tmp / "p", removed


def test_predict_uses_the_stored_tokenizer_like_transformers(with_data):
    """Predicted probabilities = softmax of transformers' logits on each text alone (no padding)."""
    from tokenizers import Tokenizer

    from mhsa_cli.predict import predict_texts
    from mhsa_cli.predict.loaders import load_for_predict

    _, hf, folder, ckpt, _, _ = with_data
    texts = [t for t, _ in corpus(9, seed=5)] + [" ".join(WORDS)]  # the last one is truncated to 16
    probs = predict_texts(load_for_predict(ckpt, "torch"), texts, batch_size=4)
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.enable_truncation(16)
    with torch.no_grad():
        ref = torch.cat([hf(input_ids=torch.tensor([tok.encode(t).ids])).logits.softmax(-1) for t in texts])
    assert float((probs - ref).abs().max()) <= TOL


def test_export_to_onnx_matches_transformers_and_the_gated_original(with_data, tmp_path):
    """ORT fp32 (a plain InferenceSession) on the imported and on the pruned model vs their oracles."""
    import onnxruntime as ort

    from mhsa_cli.prune.surgery import gates_for

    family, hf, folder, ckpt, pruned, removed = with_data
    pad = load_model(ckpt).config.pad_id
    x = batch(folder, pad)
    with torch.no_grad():
        original = load_model(ckpt)
        gated = original(x, features=True, head_gates=gates_for(original.heads, dict(enumerate(removed)))).logits
    for src, ref in ((ckpt, hf_logits(hf, x, pad)), (pruned, gated)):
        r = invoke("export", src, "--threads", 1, "--out", tmp_path / src.name)
        assert r.exit_code == 0, r.output
        meta = json.loads((tmp_path / src.name / "export.json").read_text())
        assert meta["checks"]["parity"]["max_abs_gap"] <= TOL and meta["input"]["padding_id"] == pad
        assert meta["task"]["tokenizer"] == json.loads((folder / "tokenizer.json").read_text())
        s = ort.InferenceSession(str(tmp_path / src.name / "model.onnx"), providers=["CPUExecutionProvider"])
        assert float(abs(s.run(None, {"input": x.numpy()})[0] - ref.numpy()).max()) <= TOL


# --------------------------------------------------------------------------- the transformers check


def test_import_records_its_gap_to_transformers(imported):
    """The recorded gap is the logit gap an independent comparison finds (same rows: built-in texts)."""
    from mhsa_cli.imports.hf_check import SAMPLE_TEXTS

    family, hf, folder, ckpt = imported
    metrics = load_checkpoint(ckpt).meta["metrics"]
    assert metrics["hf_check"].startswith(f"logits vs transformers {transformers.__version__} on 6 rows")
    model = load_model(ckpt)
    x = encode(list(SAMPLE_TEXTS), json.loads((folder / "tokenizer.json").read_text()), 32, model.config.pad_id)
    with torch.no_grad():
        want = float((model(x) - hf_logits(hf, x, model.config.pad_id)).abs().max())
    assert metrics["hf_max_gap"] == pytest.approx(want, abs=1e-7) and metrics["hf_max_gap"] <= TOL
    assert "vs transformers" in invoke("info", ckpt).output


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_base_model_check_compares_hidden_states(family, tmp_path):
    make_hf(family, tmp_path / "hf", base=True)
    r = invoke("import", tmp_path / "hf", "--out", tmp_path / "ckpt")
    assert r.exit_code == 0, r.output
    metrics = load_checkpoint(tmp_path / "ckpt").meta["metrics"]
    pooled = " + pooler output" if family == "bert" else ""  # DistilBERT's pooler is fresh: not compared
    assert metrics["hf_check"].startswith(f"last hidden states{pooled} vs transformers")
    assert metrics["hf_max_gap"] <= TOL


def test_a_wrong_mapping_shows_in_the_recorded_gap(tmp_path, monkeypatch):
    """The check can fail: negate layer 0's query weights at import and the gap is large and noted."""
    from mhsa_cli import imports

    make_hf("bert", tmp_path / "hf")
    real_plan = imports.plan_weights

    def swapped(*args, **kw):
        mapped, fresh, ignored = real_plan(*args, **kw)
        mapped["blocks.0.attn.q.weight"] = -mapped["blocks.0.attn.q.weight"]
        return mapped, fresh, ignored

    monkeypatch.setattr(imports, "plan_weights", swapped)
    r = invoke("import", tmp_path / "hf", "--out", tmp_path / "ckpt")
    assert r.exit_code == 0, r.output
    gap = load_checkpoint(tmp_path / "ckpt").meta["metrics"]["hf_max_gap"]
    assert gap > 1e-2 and "exceeds" in r.output


def test_without_transformers_the_check_is_recorded_as_not_run(tmp_path, monkeypatch):
    from mhsa_cli.imports import hf_check

    make_hf("bert", tmp_path / "hf")
    monkeypatch.setattr(hf_check, "_transformers", lambda: None)
    r = invoke("import", tmp_path / "hf", "--out", tmp_path / "ckpt")
    assert r.exit_code == 0, r.output
    metrics = load_checkpoint(tmp_path / "ckpt").meta["metrics"]
    assert "hf_max_gap" not in metrics and metrics["hf_check"].startswith("not run: transformers is not installed")


def test_sentence_transformers_extras_are_ignored_with_a_note(tmp_path):
    make_hf("bert", tmp_path / "hf")
    (tmp_path / "hf" / "modules.json").write_text("[]")
    (tmp_path / "hf" / "sentence_bert_config.json").write_text("{}")
    (tmp_path / "hf" / "1_Pooling").mkdir()
    (tmp_path / "hf" / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    r = invoke("import", tmp_path / "hf", "--out", tmp_path / "ckpt")
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "sentence-transformers files ignored (modules.json, sentence_bert_config.json, 1_Pooling)" in flat


# --------------------------------------------------------------------------- from the checkpoint alone


def test_imported_without_data_exports_quantizes_and_prunes_by_magnitude(tmp_path):
    """`mhsa import FOLDER` without --data: export (parity on rows built from the checkpoint, accuracy
    recorded as not measured), quantize and prune by magnitude work; gradient asks for --data and
    takes it, read with the stored tokenizer."""
    hf, _ = make_hf("roberta", tmp_path / "hf")
    ckpt = tmp_path / "ckpt"
    assert invoke("import", tmp_path / "hf", "--out", ckpt).exit_code == 0
    r = invoke("export", ckpt, "--threads", 1, "--check-rows", 8, "--out", tmp_path / "onnx")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "onnx" / "export.json").read_text())
    assert meta["checks"]["test_acc"] is None and meta["checks"]["test_acc_not_measured"] == "no data"
    assert meta["labels"] == ["c0", "c1", "c2"] and meta["input"]["padding_id"] == 1
    import onnxruntime as ort

    x = batch(tmp_path / "hf", 1)  # real tokenized rows: ORT fp32 vs transformers, the oracle
    s = ort.InferenceSession(str(tmp_path / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert float(abs(s.run(None, {"input": x.numpy()})[0] - hf_logits(hf, x, 1).numpy()).max()) <= TOL
    r = invoke("quantize", ckpt, "--latency-time", 0, "--out", tmp_path / "q")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(tmp_path / "q").meta["metrics"]["accuracy_not_measured"] == "no data"
    r = invoke("prune", ckpt, "--method", "magnitude", "--ratio", 0.5, "--device", "cpu", "--out", tmp_path / "m")
    assert r.exit_code == 0, r.output
    assert sum(load_model(tmp_path / "m").config.heads) == 4
    r = invoke("prune", ckpt, "--device", "cpu", "--out", tmp_path / "g")
    assert_one_line_error(r, "--method gradient", "has no data", "--data FILE")
    csv = tmp_path / "data.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{'c1' if lab == 'pos' else 'c0'}\n" for t, lab in corpus(60)))
    r = invoke("prune", ckpt, "--data", csv, "--task-opt", "max_len=16", "--ratio", 0.5, "--device", "cpu",
               "--batch-size", 16, "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    spec = load_checkpoint(tmp_path / "g").task_spec
    assert spec["path"] == str(csv) and spec["labels"] == ["c0", "c1", "c2"] and spec["pad_id"] == 1
    assert spec["tokenizer"] == json.loads((tmp_path / "hf" / "tokenizer.json").read_text())


def test_out_that_holds_the_hf_folder_is_refused_even_with_force(tmp_path):
    make_hf("bert", tmp_path / "hf")
    before = sorted(p.name for p in (tmp_path / "hf").iterdir())
    r = invoke("import", tmp_path / "hf", "--out", tmp_path, "--force")
    assert_one_line_error(r, f"output folder {tmp_path} contains the input {tmp_path / 'hf'}")
    assert sorted(p.name for p in (tmp_path / "hf").iterdir()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]


def _edit_config(folder, **changes):
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("family,changes,fragment", [
    ("bert", {"num_attention_heads": 0}, "config.json 'num_attention_heads' must be >= 1, got 0"),  # ZeroDivision
    ("distilbert", {"n_heads": 0}, "config.json 'n_heads' must be >= 1, got 0"),
    ("bert", {"hidden_size": "abc"}, "config.json 'hidden_size' must be an integer, got \"abc\""),  # ValueError
    ("bert", {"num_attention_heads": 4.5}, "'num_attention_heads' must be an integer, got 4.5"),  # was int(4.5)
    ("distilbert", {"dim": 32.0}, "config.json 'dim' must be an integer, got 32.0"),
    ("bert", {"vocab_size": True}, "'vocab_size' must be an integer, got true"),
    ("bert", {"num_attention_heads": 3}, "'hidden_size' 32 is not divisible by 'num_attention_heads' 3"),
    ("bert", {"num_hidden_layers": -1}, "'num_hidden_layers' must be >= 1"),
    ("bert", {"hidden_act": ["gelu"]}, "unsupported activation [\"gelu\"]"),  # was unhashable list
    ("bert", {"hidden_act": "swish"}, "unsupported activation \"swish\""),
    ("bert", {"layer_norm_eps": "x"}, "'layer_norm_eps' must be a number"),  # ValueError
    ("bert", {"hidden_dropout_prob": 2}, "'hidden_dropout_prob' must be a number in [0, 1), got 2"),
    ("bert", {"pad_token_id": 999}, "'pad_token_id' 999 is outside the vocabulary"),
    ("roberta", {"max_position_embeddings": 2}, "'max_position_embeddings' 2 leaves no position"),
    ("bert", {"id2label": {"0": "a", "1": "a", "2": "b"}}, "'id2label' names class 'a' twice"),  # accepted
    ("bert", {"id2label": {"x": "a"}}, "'id2label' keys must be the class ids 0..0"),  # ValueError
    ("bert", {"id2label": None, "num_labels": "x"}, "'num_labels' must be an integer"),  # ValueError
    ("bert", {"architectures": "BertModel"}, "'architectures' must be a list of names"),  # read as "B"
])
def test_bad_config_fields_are_one_line_before_any_work(tmp_path, monkeypatch, family, changes, fragment):
    from mhsa_cli import imports

    make_hf(family, tmp_path / "hf")
    _edit_config(tmp_path / "hf", **changes)
    monkeypatch.setattr(imports, "load_weights", lambda *a: pytest.fail("weights read before the config check"))
    _bad(tmp_path, fragment)


def _retensor(folder, edit):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_or_integer_weights_are_refused_before_a_model_is_built(tmp_path, monkeypatch, value):
    """A NaN was imported, then every command refused the checkpoint it made; now import refuses it."""
    from mhsa_cli import imports

    make_hf("bert", tmp_path / "hf")
    key = "bert.encoder.layer.1.attention.self.query.weight"
    _retensor(tmp_path / "hf", lambda t: t[key].__setitem__((0, 0), value))
    monkeypatch.setattr(imports, "build_model", lambda *a, **k: pytest.fail("model built before the weights check"))
    _bad(tmp_path, f"weight '{key}' holds 1 NaN/Inf value")
    _retensor(tmp_path / "hf", lambda t: t.__setitem__(key, t[key].nan_to_num().to(torch.int32)))
    _bad(tmp_path, f"tensor '{key}' is torch.int32, expected floating point")


def test_tokenizer_ids_beyond_the_embedding_are_refused(tmp_path):
    """Fewer tokens than rows, but one id past the last row: each would index outside the embedding."""
    make_hf("bert", tmp_path / "hf")
    tok = json.loads((tmp_path / "hf" / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    word = next(w for w, i in vocab.items() if i == max(vocab.values()))
    vocab[word] = 100  # the embedding has 64 rows
    (tmp_path / "hf" / "tokenizer.json").write_text(json.dumps(tok))
    _bad(tmp_path, f"tokenizer.json gives token '{word}' id 100, but the embedding has 64 rows")


def test_repeated_label_names_are_refused(tmp_path):
    make_hf("bert", tmp_path / "hf")
    _bad(tmp_path, "--labels names class 'a' twice", extra=("--labels", "a,b,a"))


@pytest.mark.slow
def test_pretrained_text_recipe_runs_and_resumes_on_a_tiny_saved_model(tmp_path, monkeypatch):
    """import -> fine-tune -> prune -> distill; prune heads+neurons per block -> distill (deploy) -> int8 ->
    export -> bench on a tiny BERT; then the run is 'interrupted' inside the deploy stage (its marker gone, as
    a kill leaves it) and a rerun redoes that stage and its dependants only, keeping the earlier checkpoints
    byte for byte."""
    from mhsa_cli.config import RecipeConfig, build_config
    from mhsa_cli.recipe import run_recipe

    make_hf("bert", tmp_path / "hf", base=True)
    csv = tmp_path / "data.csv"
    csv.write_text("text,label\n" + "".join(f"{t},{lab}\n" for t, lab in corpus(80)))
    sets = {"import.path": tmp_path / "hf", "import.data": csv, "teacher.epochs": 1, "pruned.finetune_epochs": 1,
            "student.epochs": 1, "student.layers": 1, "student.hidden_layers": ["1:2"], "narrow.finetune_epochs": 1,
            "deploy.epochs": 1, "deploy.layers": 1, "deploy.hidden_layers": ["1:2"],
            "deploy-int8.latency_time": 0, "bench.min_time": 0.01, "bench.min_repeats": 2, "bench.warmup": 1,
            "bench.batch_sizes": [2]}
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}" if not isinstance(v, list) else f"{k}={json.dumps(v)}")]
    out = tmp_path / "out"
    r = invoke("run", "recipes/pretrained-text.yaml", *args, "--out", out)
    assert r.exit_code == 0, r.output
    ckpt = {s: load_checkpoint(out / s).meta for s in ("teacher", "pruned", "student", "narrow", "deploy")}
    assert ckpt["teacher"]["model"]["heads"] == [4, 4] and sum(ckpt["pruned"]["model"]["heads"]) == 4
    assert ckpt["student"]["model"]["heads"] == [4] and ckpt["narrow"]["model"]["heads"] == [2, 2]  # per block
    # 74 - int(0.8 x 74) = 15 neurons kept, spread evenly; which block keeps the odd one is the lower score's
    assert sorted(ckpt["narrow"]["model"]["d_ff"]) == [7, 8]
    narrow_block2 = ckpt["narrow"]["model"]["d_ff"][1]
    assert ckpt["deploy"]["model"]["heads"] == [2] and ckpt["deploy"]["model"]["d_ff"] in (narrow_block2, [narrow_block2])
    assert ckpt["deploy"]["lineage"][-1]["operation"] == "distill"
    assert ckpt["deploy"]["lineage"][-1]["settings"]["init_from_teacher"] is True
    for stage, lr in (("pruned", 5e-5), ("student", 1e-4), ("narrow", 1e-4), ("deploy", 1e-4)):  # the schedule
        s = ckpt[stage]["lineage"][-1]["settings"]  # is inherited; the recipe sets the later stages' lr
        assert (s["lr"], s["schedule"]) == (lr, "linear"), stage
    kd = ckpt["narrow"]["lineage"][-1]["settings"]
    assert (kd["kd_weight"], kd["kd_hidden_weight"]) == (0.5, 1.0)  # narrow learns from the unpruned teacher
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert {(r["model"], r["precision"]) for r in rows if r["runtime"] == "onnxruntime"} == {
        (m, p) for m in ("teacher", "pruned", "student", "deploy") for p in ("fp32", "int8", "int8-static")}
    export = json.loads((out / "deploy-onnx" / "export.json").read_text())
    assert set(export["int8_gate"]["variants"]) == {"dynamic", "static"}
    assert export["quantization"]["per_channel"] is True  # the recipe's per-channel int8 weights
    assert json.loads((out / "bench.json").read_text())["config"]["per_channel"] is True
    before = {s: (out / s / "model.safetensors").read_bytes() for s in ("teacher", "student", "narrow")}
    (out / "deploy" / "stage.json").unlink()
    r = invoke("run", "recipes/pretrained-text.yaml", *args, "--out", out)
    assert r.exit_code == 0, r.output
    flat = " ".join(r.output.split())
    assert "teacher" in flat and all((out / s / "model.safetensors").read_bytes() == b for s, b in before.items())
    assert load_checkpoint(out / "deploy").meta["model"]["heads"] == [2]

"""mhsa_cli.model: shapes, padding masks, zero-head layers, gates, attention probabilities."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mhsa_cli.errors import MhsaError
from mhsa_cli.model import ModelConfig, attention_flops, build_model, count_parameters, make_config


def token_config(**kw):
    base = dict(input_kind="tokens", max_len=12, num_classes=5, vocab_size=20, d_model=32,
                heads=[4, 2], head_dim=8, d_ff=48)
    base.update(kw)
    return ModelConfig(**base).validate()


def test_shapes_tokens_and_features():
    m = build_model(token_config(), seed=0).eval()
    x = torch.randint(1, 20, (3, 12))
    assert m(x).shape == (3, 5)
    assert m.blocks[0].attn.q.weight.shape == (32, 32) and m.blocks[1].attn.q.weight.shape == (16, 32)
    assert m.blocks[1].attn.o.weight.shape == (32, 16)
    f = build_model(ModelConfig("features", 16, 10, feature_dim=4, d_model=32, heads=[4], head_dim=8), seed=0)
    assert f(torch.rand(2, 16, 4)).shape == (2, 10)


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "meanmax"])
def test_padding_does_not_change_logits(pooling):
    m = build_model(token_config(pooling=pooling), seed=0).eval()
    x = torch.randint(1, 20, (2, 6))
    padded = torch.cat([x, torch.zeros(2, 6, dtype=torch.long)], dim=1)  # (2, 12)
    torch.testing.assert_close(m(x), m(padded), atol=1e-5, rtol=1e-5)


def _unmasked(m, monkeypatch):
    """``m`` with its padding mask removed everywhere (what the next test must catch)."""
    real_embed = m._embed
    monkeypatch.setattr(m, "_embed", lambda x: (real_embed(x)[0], None))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("explicit", [False, True])  # SDPA path, and the path that keeps probabilities
def test_padded_positions_cannot_reach_the_logits(pooling, explicit, monkeypatch):
    m = build_model(token_config(pooling=pooling), seed=0).eval()
    x = torch.randint(1, 20, (2, 12))
    x[:, 6:] = 0  # the last 6 tokens are padding
    run = (lambda: m(x, features=True, output_attentions=True).logits) if explicit else (lambda: m(x))
    before = run()
    with torch.no_grad():  # what sits at padded positions: with the mask, nothing of it may leak
        m.pos[:, -6:] += 3.0 * torch.randn(6, 32)
    torch.testing.assert_close(run(), before, atol=1e-5, rtol=1e-5)
    _unmasked(m, monkeypatch)  # the same change without the mask does leak: this test can fail
    assert not torch.allclose(run(), before, atol=1e-3)


@pytest.mark.parametrize("explicit", [False, True])
def test_an_all_padding_sample_gives_finite_logits_on_both_paths(explicit):
    m = build_model(token_config(pooling="mean"), seed=0).eval()  # no CLS: every key can be padding
    x = torch.randint(1, 20, (3, 12))
    x[1] = 0  # sample 1 is all padding
    sdpa = m(x)
    out = m(x, features=True, output_attentions=True) if explicit else None
    logits = out.logits if explicit else sdpa
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits, sdpa, atol=1e-5, rtol=1e-5)  # both paths agree, row 1 included
    if explicit:
        assert torch.all(out.attentions[0][1] == 0)  # no key to attend: zero weights, like SDPA's output
        m.train()
        m(x, features=True, output_attentions=True).logits.sum().backward()
        assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_max_and_meanmax_pooling_by_hand():
    """max: per feature the largest final state over real tokens; meanmax: mean + max."""
    m = build_model(token_config(pooling="max"), seed=0).eval()
    x = torch.tensor([[3, 4, 5, 0, 0]])
    out = m.forward_features(x)
    h = out.hidden_states[-1][:, :3]  # (1, 3, D): the real tokens only
    torch.testing.assert_close(out.logits, m.head(m.ln_f(h.amax(1))))
    m.config.pooling = "meanmax"
    torch.testing.assert_close(m(x), m.head(m.ln_f(h.amax(1) + h.mean(1))))


def test_zero_head_layer_is_valid_and_adds_only_bias():
    m = build_model(token_config(heads=[0, 2]), seed=0).eval()
    attn = m.blocks[0].attn
    assert not hasattr(attn, "q") and attn.o_bias.shape == (32,)
    x = torch.randn(2, 5, 32)
    out, probs = attn(x)
    assert probs is None
    torch.testing.assert_close(out, attn.o_bias.expand(2, 5, 32))
    assert m(torch.randint(1, 20, (2, 12))).shape == (2, 5)
    assert m.heads == [0, 2]


def test_attention_probabilities_path_equals_fast_path():
    m = build_model(token_config(), seed=1).eval()
    x = torch.randint(0, 20, (4, 12))
    x[:, 0] = 3  # at least one real token
    out = m(x, features=True, output_attentions=True)
    torch.testing.assert_close(out.logits, m(x), atol=1e-5, rtol=1e-5)
    p = out.attentions[0]
    assert p.shape == (4, 4, 13, 13)  # CLS + 12 tokens
    torch.testing.assert_close(p.sum(-1), torch.ones(4, 4, 13))
    pad_keys = torch.cat([torch.zeros(4, 1, dtype=torch.bool), x == 0], dim=1)  # (B, T)
    assert torch.all(p.masked_select(pad_keys[:, None, None, :].expand_as(p)) == 0)
    assert len(out.hidden_states) == 3


def test_gates_of_one_change_nothing_and_zero_gates_matter():
    m = build_model(token_config(), seed=2).eval()
    x = torch.randint(1, 20, (3, 12))
    ones = [torch.ones(4), torch.ones(2)]
    torch.testing.assert_close(m(x, features=True, head_gates=ones).logits, m(x), atol=1e-6, rtol=1e-6)
    zeros = [torch.zeros(4), torch.ones(2)]
    assert not torch.allclose(m(x, features=True, head_gates=zeros).logits, m(x))


def test_same_seed_same_weights_and_different_seed_differs():
    a, b, c = (build_model(token_config(), seed=s) for s in (0, 0, 1))
    for (ka, va), (_, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(va, vb), ka
    assert not torch.equal(a.blocks[0].attn.q.weight, c.blocks[0].attn.q.weight)


@pytest.mark.parametrize("kw,msg", [
    (dict(layers=0), "layers must be >= 1"),
    (dict(heads=3), "divisible"),
    (dict(heads=0), "divisible"),
])
def test_make_config_rejects_bad_shapes(kw, msg):
    args = dict(layers=2, d_model=32, heads=4)
    args.update(kw)
    with pytest.raises(MhsaError, match=msg):
        make_config("tokens", 12, 5, 20, 0, args["layers"], args["d_model"], args["heads"], 48, 0.0, "cls")


def test_flops_and_params_shrink_with_heads():
    full, pruned = token_config(heads=[4, 4]), token_config(heads=[2, 0])
    assert attention_flops(pruned) < attention_flops(full)
    assert count_parameters(build_model(pruned)) < count_parameters(build_model(full))


def test_too_long_input_is_a_clear_error():
    m = build_model(token_config(), seed=0)
    with pytest.raises(MhsaError, match="exceeds the model's max_len"):
        m(torch.ones(1, 20, dtype=torch.long))


class BagOfEmbeddings(nn.Module):
    """The attention-free control: mean-pooled token + position embeddings and an MLP."""

    def __init__(self, vocab: int, max_len: int, classes: int, d: int = 64):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d, padding_idx=0), nn.Parameter(torch.randn(1, max_len, d) * 0.02)
        self.mlp = nn.Sequential(nn.Linear(d, 128), nn.GELU(), nn.Linear(128, classes))

    def forward(self, x):
        mask = (x != 0).unsqueeze(-1).float()  # (B, T, 1)
        h = (self.tok(x) + self.pos) * mask
        return self.mlp(h.sum(1) / mask.sum(1))


@pytest.mark.slow
def test_order_task_needs_attention():
    """The quickstart task: attention model far above an attention-free model of similar size."""
    from mhsa_cli.tasks import load_task
    from mhsa_cli.train import LoopConfig, evaluate, fit

    data = load_task("order", seed=0, n_val=300, n_test=500)
    loop = LoopConfig(epochs=5, batch_size=64, lr=3e-3)
    bag = BagOfEmbeddings(data.vocab_size, data.max_len, data.num_classes)
    torch.manual_seed(0)
    fit(bag, data, loop)
    cfg = make_config("tokens", data.max_len, data.num_classes, data.vocab_size, 0, 2, 64, 4, 128, 0.0, "cls")
    attn = build_model(cfg, seed=0)
    fit(attn, data, loop)
    bag_acc, attn_acc = evaluate(bag, data.test), evaluate(attn, data.test)
    assert bag_acc < 0.35, bag_acc  # chance is 1/6
    assert attn_acc > bag_acc + 0.4, (attn_acc, bag_acc)


# --------------------------------------------------------------------------- BERT-family switches

def _old_forward(sd, x, heads, S, eps=1e-5):
    """The original mhsa model written out by hand from a state dict (pre-LN, learned CLS,
    positions from 0, pad id 0, exact GELU, final LayerNorm, no pooler): the oracle that the
    defaults still compute it."""
    F = torch.nn.functional
    ln = lambda t, p: F.layer_norm(t, t.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)
    lin = lambda t, p: t @ sd[p + ".weight"].T + sd[p + ".bias"]
    B, T = x.shape
    h = torch.cat([sd["cls"].expand(B, 1, -1), sd["embed.weight"][x]], 1) + sd["pos"][:, : T + 1]
    keep = torch.cat([torch.ones(B, 1, dtype=torch.bool), x != 0], 1)  # (B, T+1)
    for i, H in enumerate(heads):
        p = f"blocks.{i}."
        a = ln(h, p + "ln1")
        q, k, v = (lin(a, p + "attn." + n).view(B, T + 1, H, S).transpose(1, 2) for n in "qkv")
        w = (q @ k.transpose(-1, -2) / S ** 0.5).masked_fill(~keep[:, None, None], float("-inf"))
        y = (w.softmax(-1) @ v).transpose(1, 2).reshape(B, T + 1, H * S)
        h = h + lin(y, p + "attn.o")
        h = h + lin(F.gelu(lin(ln(h, p + "ln2"), p + "ff1")), p + "ff2")
    return lin(ln(h[:, 0], "ln_f"), "head")


def test_defaults_are_the_original_model():
    """Old checkpoints load: same parameter names and shapes, and the same logits."""
    m = build_model(token_config(), seed=3).eval()
    names = {"cls", "pos", "embed.weight", "ln_f.weight", "ln_f.bias", "head.weight", "head.bias"}
    for i in range(2):
        names |= {f"blocks.{i}.{n}.{w}" for n in ("ln1", "ln2", "ff1", "ff2", "attn.q", "attn.k",
                                                   "attn.v", "attn.o") for w in ("weight", "bias")}
    assert set(m.state_dict()) == names
    assert m.pos.shape == (1, 13, 32)
    x = torch.randint(1, 20, (3, 12))
    x[0, 7:] = 0
    torch.testing.assert_close(m(x), _old_forward(m.state_dict(), x, [4, 2], 8), atol=1e-5, rtol=1e-5)


def test_post_ln_block_is_ln_of_residual():
    from mhsa_cli.model import Block

    torch.manual_seed(0)
    b = Block(16, 2, 8, 24, 0.0, norm="post", activation="gelu_tanh", ln_eps=1e-12).eval()
    x = torch.randn(2, 5, 16)
    a, _ = b.attn(x)
    mid = torch.nn.functional.layer_norm(x + a, (16,), b.ln1.weight, b.ln1.bias, 1e-12)
    ff = b.ff2(torch.nn.functional.gelu(b.ff1(mid), approximate="tanh"))
    want = torch.nn.functional.layer_norm(mid + ff, (16,), b.ln2.weight, b.ln2.bias, 1e-12)
    torch.testing.assert_close(b(x)[0], want)
    assert b.ln1.eps == 1e-12


def test_bert_style_switches_shapes_padding_and_pooler():
    c = token_config(pooling="first", norm="post", embed_norm=True, final_norm=False, type_vocab_size=2,
                     pos_offset=2, pad_id=1, pooler="tanh", ln_eps=1e-12)
    m = build_model(c, seed=0).eval()
    assert m.pos.shape == (1, 2 + 12, 32) and m.type_embed.weight.shape == (2, 32)
    assert isinstance(m.ln_f, nn.Identity) and m.pooler.weight.shape == (32, 32)
    x = torch.randint(2, 20, (2, 6))
    padded = torch.cat([x, torch.ones(2, 6, dtype=torch.long)], 1)  # pad id 1
    torch.testing.assert_close(m(x), m(padded), atol=1e-5, rtol=1e-5)
    # pooler: logits = head(tanh(pooler(first token's last hidden state)))
    h = m(x, features=True).hidden_states[-1][:, 0]
    torch.testing.assert_close(m(x), m.head(torch.tanh(m.pooler(h))))
    # positions start at row 2: changing rows 0-1 changes nothing, row 2 does
    with torch.no_grad():
        before = m(x)
        m.pos[:, :2] += torch.randn(1, 2, 32)  # (a constant shift would vanish in embed_ln)
        torch.testing.assert_close(m(x), before)
        m.pos[:, 2] += torch.randn(32)
        assert not torch.allclose(m(x), before)


@pytest.mark.parametrize("kw,msg", [
    (dict(norm="middle"), "unknown norm"), (dict(activation="swish"), "unknown activation"),
    (dict(pooler="max"), "unknown pooler"), (dict(pad_id=20), "pad_id 20"), (dict(ln_eps=0.0), "ln_eps"),
])
def test_bad_switches_are_clear_errors(kw, msg):
    with pytest.raises(MhsaError, match=msg):
        token_config(**kw)


def _rows_seen_by_last_ff(m, x):
    """How many positions the last block's feed-forward computes (a hook on ff1)."""
    seen = []
    hook = m.blocks[-1].ff1.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1]))
    with torch.no_grad():
        logits = m(x)
    hook.remove()
    return seen[0], logits


@pytest.mark.parametrize("kw", [dict(), dict(norm="post", pooling="first"), dict(heads=[4, 0]),
                                dict(heads=[2], pooling="first")])
def test_eval_forward_computes_only_the_pooled_row_of_the_last_block(kw):
    m = build_model(token_config(**kw), seed=3).eval()
    x = torch.randint(1, 20, (5, 12))
    x[1, 4:] = 0  # padded rows
    x[2, :] = 0  # all padding but the cls row (first pooling: an all-padding sample)
    rows, fast = _rows_seen_by_last_ff(m, x)
    assert rows == 1
    # the independent oracle: the full forward (every row of every block), row 0 pooled
    full = m(x, features=True).logits
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    assert m.first_only
    m.train()  # training keeps the full last block (bitwise the same training as before)
    assert not m.first_only and _rows_seen_by_last_ff(m, x)[0] == x.shape[1] + (kw.get("pooling", "cls") == "cls")


@pytest.mark.parametrize("pooling", ["mean", "max", "meanmax"])
def test_pooling_over_all_rows_keeps_the_full_last_block(pooling):
    m = build_model(token_config(pooling=pooling), seed=3).eval()
    assert not m.first_only and _rows_seen_by_last_ff(m, torch.randint(1, 20, (2, 12)))[0] == 12



def test_flops_by_hand_for_full_and_pooled_row_last_blocks():
    # D 32, heads [4, 2] x 8 (inner 32, 16), d_ff 48, 5 classes; matmul MACs x 2
    mean = token_config(pooling="mean")  # T = 12, every block all rows
    l1 = 4 * 12 * 32 * 32 + 2 * 12 * 12 * 32 + 2 * 12 * 32 * 48  # q k v o; scores, p @ v; ff1 ff2
    l2 = 4 * 12 * 32 * 16 + 2 * 12 * 12 * 16 + 2 * 12 * 32 * 48
    assert attention_flops(mean) == 2 * (l1 + l2 + 32 * 5)
    cls = token_config()  # T = 13 (cls + 12); the last block computes the cls row alone
    l1 = 4 * 13 * 32 * 32 + 2 * 13 * 13 * 32 + 2 * 13 * 32 * 48
    l2 = 2 * 13 * 32 * 16 + 2 * 1 * 32 * 16 + 2 * 1 * 13 * 16 + 2 * 1 * 32 * 48  # k v; q o; 1 row
    assert attention_flops(cls) == 2 * (l1 + l2 + 32 * 5)

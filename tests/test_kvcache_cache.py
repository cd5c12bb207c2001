"""PagedKVCache: eviction against the list-based reference, eviction
invariants as properties, and transformers generate end to end."""
from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

transformers = pytest.importorskip("transformers")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import llmpack  # noqa: E402,F401
from llmpack.kv import PagedKVCache, attach, make_policy  # noqa: E402
from llmpack.kv.attention import paged_attention_forward  # noqa: E402
from llmpack.models import tiny_llama  # noqa: E402
from llmpack.reference.kvcache import EvictingHeadReference, rope  # noqa: E402

D = 16


def _module(head_dim=D):
    cfg = SimpleNamespace(rope_parameters={"rope_theta": 10000.0, "rope_type": "default"}, head_dim=head_dim,
                          hidden_size=head_dim, num_attention_heads=1)
    return SimpleNamespace(config=cfg)


def _inv_freq(head_dim=D):
    return 1.0 / (10000.0 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def _step(cache, q, k, v, mask=None, position_ids=None, layer_idx=0):
    """One forward of one layer, as a transformers attention module runs it."""
    kw = {} if position_ids is None else {"position_ids": position_ids}
    k2, v2 = cache.update(k, v, layer_idx, kwargs=kw)
    out, _ = paged_attention_forward(_module(q.shape[-1]), q, k2, v2, mask, scaling=q.shape[-1] ** -0.5, **kw)
    return out


# ---- eviction against the reference, one token at a time ------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("policy,budget,extra", [
    ("full", None, {}), ("window", 7, {}), ("sink", 9, dict(sink_tokens=3)),
    ("sink", 9, dict(sink_tokens=2, reposition=False)), ("h2o", 8, {}), ("h2o", 8, dict(reposition=True)),
    ("sink+h2o", 10, dict(sink_tokens=2, recent=3)), ("window", 1, {}),
])
@pytest.mark.parametrize("page_size", [1, 4, 16])
def test_decode_matches_reference(policy, budget, extra, page_size, dtype):
    torch.manual_seed(0)
    b, hkv, group, steps = 2, 2, 3, 40
    pol = make_policy(policy, budget=budget, **extra)
    cache = PagedKVCache(policy, budget=budget, page_size=page_size, dtype=dtype, **extra)
    refs = [[EvictingHeadReference(pol, _inv_freq()) for _ in range(hkv)] for _ in range(b)]
    inv = _inv_freq()
    for t in range(steps):
        q_raw = torch.randn(b, hkv * group, D)
        k_raw, v = torch.randn(b, hkv, D), torch.randn(b, hkv, D)
        q, k = rope(q_raw, t, inv), rope(k_raw, t, inv)          # as the model rotates them, absolute t
        out = _step(cache, q[:, :, None], k[:, :, None], v[:, :, None])[:, 0]   # [B, Hq, D]
        layer = cache.layers[0]
        for i in range(b):
            for h in range(hkv):
                ref = refs[i][h]
                ref.append(k_raw[i, h], v[i, h], t)
                want, _ = ref.attend(q_raw[i, h * group:(h + 1) * group], t, D ** -0.5)
                tol = 2e-5 if dtype == torch.float32 else 3e-2
                torch.testing.assert_close(out[i, h * group:(h + 1) * group].float(), want, atol=tol, rtol=tol)
                n = int(layer.lengths[i, h])
                assert sorted(layer.tok[i, h, :n].tolist()) == ref.tokens(), (t, i, h)


def test_prefill_then_decode_matches_token_by_token():
    """A prompt prefilled at once and then evicted equals, for the sliding
    policies, feeding it one token at a time (same kept set, same outputs)."""
    torch.manual_seed(1)
    b, hkv, hq, t0 = 2, 2, 4, 30
    q, k, v = torch.randn(b, hq, t0 + 5, D), torch.randn(b, hkv, t0 + 5, D), torch.randn(b, hkv, t0 + 5, D)
    for policy, extra in [("window", {}), ("sink", dict(sink_tokens=3, reposition=False))]:
        whole = PagedKVCache(policy, budget=11, page_size=4, **extra)
        single = PagedKVCache(policy, budget=11, page_size=4, **extra)
        _step(whole, q[:, :, :t0], k[:, :, :t0], v[:, :, :t0])
        for i in range(t0):
            _step(single, q[:, :, i:i + 1], k[:, :, i:i + 1], v[:, :, i:i + 1])
        for i in range(t0, t0 + 5):
            a = _step(whole, q[:, :, i:i + 1], k[:, :, i:i + 1], v[:, :, i:i + 1])
            s = _step(single, q[:, :, i:i + 1], k[:, :, i:i + 1], v[:, :, i:i + 1])
            torch.testing.assert_close(a, s, atol=1e-5, rtol=1e-5)
        lw, ls = whole.layers[0], single.layers[0]
        for i in range(b):
            for h in range(hkv):
                n = int(lw.lengths[i, h])
                assert sorted(lw.tok[i, h, :n].tolist()) == sorted(ls.tok[i, h, :int(ls.lengths[i, h])].tolist())


def test_h2o_prefill_keeps_heaviest():
    """After an H2O prefill the kept tokens are the sinks/recent plus the
    tokens that received the most attention over the prompt."""
    torch.manual_seed(2)
    b, hkv, hq, t = 1, 1, 2, 40
    q, k, v = torch.randn(b, hq, t, D), torch.randn(b, hkv, t, D), torch.randn(b, hkv, t, D)
    k[0, 0, 7] *= 0  # a key all queries like equally -> tends to be heavy; the check is exact anyway
    cache = PagedKVCache("h2o", budget=10, recent=4, page_size=3)
    _step(cache, q, k, v)
    logits = (q[0].double() @ k[0, 0].double().T) * D ** -0.5
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    p = torch.softmax(logits.masked_fill(~causal, float("-inf")), -1)   # [hq, t, t]
    received = p.sum((0, 1))
    recent = set(range(t - 4, t))
    heavy = [i for i in received.argsort(descending=True).tolist() if i not in recent][:6]
    layer = cache.layers[0]
    assert sorted(layer.tok[0, 0, :10].tolist()) == sorted(recent | set(heavy))
    torch.testing.assert_close(layer.acc[0, 0, :10].sort().values,
                               received[layer.tok[0, 0, :10]].float().sort().values, atol=1e-5, rtol=1e-5)


# ---- invariants, as properties ---------------------------------------------------------------------------------

@st.composite
def scenarios(draw):
    name = draw(st.sampled_from(["full", "window", "sink", "h2o", "sink+h2o"]))
    budget = None if name == "full" else draw(st.integers(1, 24))
    sinks = draw(st.integers(0, 4)) if name.startswith("sink") else 0
    if budget is not None:
        sinks = min(sinks, budget - 1)
        recent = draw(st.integers(1, budget - sinks))
    else:
        recent = None
    return dict(
        name=name, budget=budget, sinks=sinks, recent=recent,
        page_size=draw(st.sampled_from([1, 2, 3, 8, 16])), batch=draw(st.integers(1, 3)),
        kv_heads=draw(st.integers(1, 2)), prompt=draw(st.integers(1, 40)), pads=draw(st.lists(
            st.integers(0, 10), min_size=3, max_size=3)), steps=draw(st.integers(0, 40)),
        reposition=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def _check_invariants(layer, budget, sinks, recent, heavy):
    pool = layer.k_pages.shape[0]
    used = []
    for i in range(layer.batch_size):
        seen = int(layer.seen[i])
        for h in range(layer.kv_heads):
            n = int(layer.lengths[i, h])
            assert n == (seen if budget is None else min(seen, budget)), "budget exceeded or tokens lost"
            toks = layer.tok[i, h, :n].tolist()
            assert len(set(toks)) == n, "a kept token is duplicated"
            want = set(range(min(sinks, seen))) | set(range(max(0, seen - (recent or seen)), seen))
            assert want <= set(toks), "a sink or recent token was evicted"
            if not heavy:  # the sliding policies keep exactly sinks + the most recent
                assert set(toks) == set(range(min(sinks, seen))) | set(range(seen - (n - min(sinks, seen)), seen))
            pages = layer.tables[i, h, :-(-n // layer.page_size)].long()
            used += pages.tolist()
            # the value written for a token is its index: the slots hold what they claim
            slots = torch.arange(n)
            vals = layer.v_pages[pages[slots // layer.page_size], slots % layer.page_size, 0]
            assert vals.tolist() == [float(x) for x in toks]
    free = layer.free[:layer.n_free].tolist()
    assert len(set(used)) == len(used), "a page is used twice"
    assert not set(used) & set(free), "a used page is in the free pool"
    assert sorted(used + free) == list(range(pool)), "pages leaked from the pool"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_eviction_invariants(sc):
    torch.manual_seed(sc["seed"])
    cache = PagedKVCache(sc["name"], budget=sc["budget"], sink_tokens=sc["sinks"] or 0, recent=sc["recent"],
                         page_size=sc["page_size"], reposition=sc["reposition"] and sc["name"] != "full")
    b, hkv, t0 = sc["batch"], sc["kv_heads"], sc["prompt"]
    pads = [min(p, t0 - 1) for p in sc["pads"][:b]]
    mask = torch.ones(b, t0, dtype=torch.bool)
    for i, p in enumerate(pads):
        mask[i, :p] = False                                  # left padding
    idx = (mask.long().cumsum(1) - 1).clamp(min=0).float()  # value = token index in its row
    k = torch.randn(b, hkv, t0, D)
    v = idx[:, None, :, None].expand(b, hkv, t0, D).clone()
    q = torch.randn(b, 2 * hkv, t0, D)
    pos = (mask.long().cumsum(1) - 1).clamp(min=0)
    _step(cache, q, k, v, mask=mask, position_ids=pos)
    heavy = sc["name"].endswith("h2o")
    layer = cache.layers[0]
    _check_invariants(layer, sc["budget"], sc["sinks"], sc["recent"] if sc["budget"] else None, heavy)
    full_mask = mask
    for s in range(sc["steps"]):
        seen = layer.seen.clone()
        full_mask = torch.cat([full_mask, torch.ones(b, 1, dtype=torch.bool)], 1)
        v1 = seen.float()[:, None, None, None].expand(b, hkv, 1, D).clone()
        _step(cache, torch.randn(b, 2 * hkv, 1, D), torch.randn(b, hkv, 1, D), v1, mask=full_mask,
              position_ids=seen[:, None])
        _check_invariants(layer, sc["budget"], sc["sinks"], sc["recent"] if sc["budget"] else None, heavy)
    assert cache.get_seq_length() == t0 + sc["steps"]
    assert cache.kv_bytes() == 2 * layer.used_pages() * layer.page_size * D * 4


def test_reset_returns_everything():
    cache = PagedKVCache("window", budget=5, page_size=2)
    _step(cache, torch.randn(1, 2, 9, D), torch.randn(1, 1, 9, D), torch.randn(1, 1, 9, D))
    assert cache.num_kept_tokens(0).tolist() == [[5]]
    cache.reset()
    assert cache.get_seq_length() == 0 and cache.kv_bytes() == 0
    _step(cache, torch.randn(1, 2, 3, D), torch.randn(1, 1, 3, D), torch.randn(1, 1, 3, D))
    assert cache.num_kept_tokens(0).tolist() == [[3]]


# ---- arguments ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,match", [
    (dict(policy="lru", budget=4), "policy must be one of"),
    (dict(policy="window"), "needs a token budget"),
    (dict(policy="full", budget=8), "keeps every token"),
    (dict(policy="sink", budget=4, sink_tokens=3, recent=2), "exceed the budget"),
    (dict(policy="h2o", budget=8, recent=0), "recent must be >= 1"),
    (dict(policy="window", budget=4, page_size=0), "page_size"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PagedKVCache(**kwargs)


def test_per_row_policy_count_must_match_batch():
    cache = PagedKVCache(["full", dict(policy="window", budget=3)])
    with pytest.raises(ValueError, match="2 per-row policies for a batch of 3"):
        _step(cache, torch.randn(3, 2, 1, D), torch.randn(3, 1, 1, D), torch.randn(3, 1, 1, D))


# ---- transformers generate ---------------------------------------------------------------------------------------

def _padded_batch():
    torch.manual_seed(3)
    ids = torch.randint(0, 128, (3, 14))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    mask[2, :2] = 0
    return ids, mask


@pytest.mark.parametrize("spelling", ["cache", "past_key_values"])
def test_generate_full_equals_dynamic_cache(spelling):
    model = tiny_llama()
    ids, mask = _padded_batch()
    want = model.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False)
    attach(model)
    cache = PagedKVCache(page_size=4)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=24, do_sample=False, **{spelling: cache})
    assert torch.equal(got, want)
    # padding is not stored: each row holds its real tokens (the last token was never fed back)
    real = mask.sum(1) + 24 - 1
    assert cache.num_kept_tokens(0)[:, 0].tolist() == real.tolist()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_full_equal_dynamic_cache(dtype):
    model = tiny_llama(dtype=dtype)
    ids, mask = _padded_batch()
    dyn = transformers.DynamicCache(config=model.config)
    ref = [model(ids, attention_mask=mask, cache=dyn).logits[:, -1]]
    attach(model)
    paged = PagedKVCache()
    got = [model(ids, attention_mask=mask, cache=paged).logits[:, -1]]
    model.set_attn_implementation("sdpa")
    for step in range(4):
        nxt = ref[-1].argmax(-1, keepdim=True)
        mask = torch.cat([mask, torch.ones_like(nxt)], 1)
        ref.append(model(nxt, attention_mask=mask, cache=dyn).logits[:, -1])
        attach(model)
        got.append(model(nxt, attention_mask=mask, cache=paged).logits[:, -1])
        model.set_attn_implementation("sdpa")
    for r, g in zip(ref, got):
        mag = r.abs().max().item()
        tol = (1e-5 if dtype == torch.float32 else 3e-2) * max(mag, 1.0)
        torch.testing.assert_close(g.float(), r.float(), atol=tol, rtol=0)


@pytest.mark.parametrize("policy,kw", [("window", dict(budget=9)), ("sink", dict(budget=9, sink_tokens=2)),
                                       ("h2o", dict(budget=9)), ("sink+h2o", dict(budget=10, sink_tokens=2))])
def test_generate_with_eviction_keeps_budget(policy, kw):
    model = attach(tiny_llama())
    ids, mask = _padded_batch()
    cache = PagedKVCache(policy, page_size=4, **kw)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=16, do_sample=False, cache=cache)
    assert out.shape == (3, 30)
    for layer in range(len(cache.layers)):
        assert (cache.num_kept_tokens(layer) == kw["budget"]).all()
    assert cache.kv_bytes() == 2 * 2 * 3 * 2 * math.ceil(kw["budget"] / 4) * 4 * 16 * 4  # layers*B*Hkv*pages...


def test_without_attach_is_a_clear_error():
    model = tiny_llama()
    ids, mask = _padded_batch()
    with pytest.raises(RuntimeError, match="llmpack_paged"):
        model.generate(ids, attention_mask=mask, max_new_tokens=4, do_sample=False, cache=PagedKVCache())


def test_attached_model_without_paged_cache_is_unchanged():
    model = tiny_llama()
    ids, mask = _padded_batch()
    want = model(ids, attention_mask=mask).logits
    want_gen = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    attach(model)
    real = mask.bool()  # outputs at padding positions mean nothing in either
    torch.testing.assert_close(model(ids, attention_mask=mask).logits[real], want[real], atol=1e-5, rtol=1e-5)
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False), want_gen)


@pytest.mark.parametrize("compress", ["sparse24", "df11"])
def test_composes_with_compressed_linears(compress):
    if compress == "sparse24":
        model = tiny_llama()
        llmpack.sparsify(model, method="magnitude", progress=False)
    else:
        model = tiny_llama(dtype=torch.bfloat16)
        llmpack.compress_lossless(model, progress=False)
    ids, mask = _padded_batch()
    want = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False)
    attach(model)
    got = model.generate(ids, attention_mask=mask, max_new_tokens=12, do_sample=False, cache=PagedKVCache())
    assert torch.equal(got, want)


def test_smollm2_generate():
    pytest.importorskip("gguf")
    from llmpack.models import load_smollm2

    try:
        model, tok = load_smollm2(torch.float32)
    except ImportError as e:
        pytest.skip(str(e))
    tok.padding_side = "left"
    enc = tok(["The history of the city begins", "Once upon a time, in a small village by the sea,"],
              return_tensors="pt", padding=True)
    want = model.generate(**enc, max_new_tokens=12, do_sample=False)
    attach(model)
    assert torch.equal(model.generate(**enc, max_new_tokens=12, do_sample=False, cache=PagedKVCache()), want)
    cache = PagedKVCache("sink+h2o", budget=12, sink_tokens=2)
    model.generate(**enc, max_new_tokens=12, do_sample=False, cache=cache)
    assert (cache.num_kept_tokens(29) == 12).all()

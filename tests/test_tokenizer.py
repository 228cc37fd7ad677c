"""CLIP tokenizer (offline, from package data), prompt emphasis parsing, chunking and encoding."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import unicodedata
from importlib import resources
from pathlib import Path

import pytest
import regex
import torch

from latentgraph.nodes.sd import tokenizer as tokmod
from latentgraph.nodes.sd.prompt import (
    BREAK,
    TokenizedPrompt,
    encode_prompt,
    encode_tokens,
    is_break,
    parse_prompt_attention,
    tokenize_prompt,
)
from latentgraph.nodes.sd.tokenizer import (
    BOS_ID,
    EOS_ID,
    MAX_LENGTH,
    VOCAB_SIZE,
    TokenizerLoadError,
    get_tokenizer,
    load_merges,
    load_vocab,
    tokenize,
)

REPO = Path(__file__).resolve().parents[1]
DATA = resources.files("latentgraph.nodes.sd").joinpath("data")
PAD = [EOS_ID]


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


# --------------------------------------------------------------------------------------------
# A pure-Python reference: OpenAI CLIP's simple_tokenizer.py, built from the merges alone.
# Text preparation is CLIP's minus ftfy/html.unescape (replaced by NFC, which is what ftfy's
# normalisation amounts to for clean text): collapse whitespace, strip, lower-case.
# --------------------------------------------------------------------------------------------


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class RefCLIPTokenizer:
    def __init__(self, merges: list[tuple[str, str]]):
        self.byte_encoder = _bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += ["<|startoftext|>", "<|endoftext|>"]
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache: dict[str, str] = {}
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )

    def bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = set(zip(word, word[1:]))
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = set(zip(word, word[1:]))
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip().lower()
        ids: list[int] = []
        for token in self.pat.findall(text):
            token = "".join(self.byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self.bpe(token).split(" "))
        return ids


def _raw_merges() -> list[tuple[str, str]]:
    """The merges straight from the shipped gz file, parsed here independently of nodes.sd.tokenizer."""
    lines = gzip.decompress(DATA.joinpath("merges.txt.gz").read_bytes()).decode("utf-8").split("\n")
    assert lines[0].startswith("#version")
    return [tuple(line.split(" ")) for line in lines[1 : 49152 - 256 - 2 + 1]]


@pytest.fixture(scope="module")
def ref():
    return RefCLIPTokenizer(_raw_merges())


_WORDS = [
    "a", "photograph", "astronaut", "Hello", "WORLD", "masterpiece", "best quality", "8k", "1920x1080",
    "3.14159", "don't", "IT'S", "we'll", "they'RE", "i'd", "I'm", "you've", "café", "naïve", "Straße",
    "ÅNGSTRÖM", "日本語", "東京タワー", "한국어", "Привет", "👍", "👨‍👩‍👧", "🙂🙂", "e\u0301", "ﬁ", "…", "—",
    "¿qué?", "!!!", "?!", "#hashtag", "@user", "http://example.com/a_b?c=d&e=f", "C++", "snake_case_word",
    "x" * 40, "pneumonoultramicroscopicsilicovolcanoconiosis", "(((", "]]", "\\", "$100", "100%",
    "2024-01-01", "½", "²", "١٢٣", "ⅷ", "\t", "\n", "   ", " \u00a0 ", "\u3000", "ʻokina", "can't",
    "'quoted'", '"dq"', ",", ";", "a,b,c", "R2-D2", "iPhone15Pro", "ÉCOLE", "İstanbul", "ß", "ǅ", "ﬀ",
    "🏳️‍🌈", "\u200b", "tab\tsep", "mañana", "Zürich", "(masterpiece:1.2)", "[[blurry]]", "<lora:x:0.5>",
]
_SEPS = [" ", "  ", ", ", ",", "\t", "\n", "", " . ", "-", "_"]


def _varied_strings() -> list[str]:
    rng = random.Random(1234)
    strings = list(_WORDS) + ["ὀδυσσεύς σοφία", "ΣΟΦΙΑ"]
    for _ in range(400):
        s = "".join(rng.choice(_WORDS) + rng.choice(_SEPS) for _ in range(rng.randint(1, 12)))
        if rng.random() < 0.3:
            s = s.upper()
        if rng.random() < 0.2:
            s = "  " + s + " \n "
        strings.append(s)
    return strings


# Known divergences of Hugging Face's fast CLIP tokenizer from OpenAI's reference, kept out of
# the random corpus on purpose: a literal "<|endoftext|>" typed in a prompt (HF treats it as the
# special token in more places), and an upper-case word-final Greek sigma (Python's str.lower()
# gives final "ς", the Rust Lowercase normaliser gives "σ"). ftfy's fixes (curly quotes, mojibake)
# and html.unescape are not applied by either.


def test_reference_bpe_matches_on_varied_strings(tok, ref):
    strings = _varied_strings()
    assert len(strings) > 450
    got = tok(strings, add_special_tokens=False, verbose=False)["input_ids"]
    mismatches = [(s, r, g) for s, g in zip(strings, got) if (r := ref.encode(s)) != g]
    assert not mismatches, mismatches[:5]
    # and the padded/wrapped form
    for s in strings[:50]:
        body = ref.encode(s)[:75]
        assert tokenize(s) == [BOS_ID] + body + [EOS_ID] * (MAX_LENGTH - 1 - len(body))


def test_reference_vocab_equals_shipped_vocab(ref):
    assert load_vocab() == ref.encoder
    assert load_merges() == _raw_merges()


def test_shipped_data_is_small_and_reproducible_by_make_vocab():
    sizes = {name: len(DATA.joinpath(name).read_bytes()) for name in ("vocab.json.gz", "merges.txt.gz")}
    assert sum(sizes.values()) < 2_000_000, sizes
    # make_vocab.build() reproduces the shipped vocab from bpe-file text (header + merges).
    sys.path.insert(0, str(REPO / "nodes" / "sd" / "data"))
    try:
        import make_vocab
    finally:
        sys.path.pop(0)
    bpe_text = '"bpe_simple_vocab_16e6.txt#version: 0.2\n' + "\n".join(" ".join(m) for m in _raw_merges()) + "\n"
    vocab, merges = make_vocab.build(bpe_text)
    assert vocab == load_vocab() and merges == load_merges()
    assert list(vocab.items())[:2] == [("!", 0), ('"', 1)]


@pytest.mark.skipif(not os.environ.get("CLIP_BPE_GZ"), reason="set CLIP_BPE_GZ to OpenAI's bpe_simple_vocab_16e6.txt.gz")
def test_shipped_data_matches_openai_bpe_file(tmp_path):
    src = Path(os.environ["CLIP_BPE_GZ"])
    subprocess.run([sys.executable, str(REPO / "nodes/sd/data/make_vocab.py"), str(src), "--out", str(tmp_path)], check=True)
    for name in ("vocab.json.gz", "merges.txt.gz"):
        assert (tmp_path / name).read_bytes() == DATA.joinpath(name).read_bytes()


# --------------------------------------------------------------------------------------------
# The tokenizer itself
# --------------------------------------------------------------------------------------------


def test_known_encodings(tok):
    pad = lambda ids: ids + PAD * (MAX_LENGTH - len(ids))  # noqa: E731
    astronaut = [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    assert tok("a photograph of an astronaut riding a horse")["input_ids"] == astronaut
    assert tokenize("a photograph of an astronaut riding a horse") == pad(astronaut)
    assert tokenize("a photo of a cat") == pad([49406, 320, 1125, 539, 320, 2368, 49407])
    assert tokenize("A  Photo\tof a CAT ") == tokenize("a photo of a cat")
    assert tok("masterpiece, best quality", add_special_tokens=False)["input_ids"] == [12066, 267, 949, 3027]
    assert tok(",", add_special_tokens=False)["input_ids"] == [tokmod.COMMA_ID]


def test_vocab_and_special_tokens(tok):
    assert len(tok) == VOCAB_SIZE == 49408
    assert len(load_vocab()) == 49408 and len(load_merges()) == 48894
    assert tok.convert_tokens_to_ids(["<|startoftext|>", "<|endoftext|>"]) == [49406, 49407]
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (49406, 49407, 49407)
    assert tok.model_max_length == 77
    vocab = load_vocab()
    assert vocab["a</w>"] == 320 and vocab[",</w>"] == 267 and vocab["!"] == 0 and vocab["!</w>"] == 256


def test_truncation_padding_and_empty(tok):
    ids = tokenize("cat " * 100)
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407 and ids[1:76] == [2368] * 75
    assert tokenize("") == [49406] + [49407] * 76
    # transformers' own call truncates too (needs model_max_length=77)
    assert len(tok("cat " * 100, truncation=True)["input_ids"]) == 77


def test_tokenizer_is_cached():
    assert get_tokenizer() is get_tokenizer()


def test_wrong_tokenizer_fails_loudly():
    import inspect

    import transformers

    if "vocab" not in inspect.signature(transformers.CLIPTokenizer.__init__).parameters:
        pytest.skip("transformers 4.x has no in-memory CLIPTokenizer constructor")
    # The 4.x keywords are silently swallowed by transformers 5.x: a 2-token tokenizer.
    bad = transformers.CLIPTokenizer(vocab_file="vocab.json", merges_file="merges.txt", model_max_length=77)
    assert len(bad) < 10
    with pytest.raises(TokenizerLoadError, match="49408"):
        tokmod._check(bad)
    # Right vocabulary but no merges: caught by the known-encoding self check.
    no_merges = transformers.CLIPTokenizer(vocab=load_vocab(), merges=[], model_max_length=77)
    with pytest.raises(TokenizerLoadError, match="encodes to"):
        tokmod._check(no_merges)


def test_loads_offline_without_network():
    code = (
        "import socket\n"
        "def _no(*a, **k): raise RuntimeError('network access attempted')\n"
        "socket.socket.connect = _no; socket.create_connection = _no; socket.getaddrinfo = _no\n"
        "from nodes.sd.tokenizer import get_tokenizer, tokenize\n"
        "t = get_tokenizer(); assert len(t) == 49408, len(t)\n"
        "assert tokenize('a photo of a cat')[:7] == [49406, 320, 1125, 539, 320, 2368, 49407]\n"
        "print('ok')\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME="/nonexistent-hf-home")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


# --------------------------------------------------------------------------------------------
# Emphasis parsing
# --------------------------------------------------------------------------------------------

P = 1.1
PARSE_CASES = [
    ("", [("", 1.0)]),
    ("a cat", [("a cat", 1.0)]),
    ("(cat)", [("cat", P)]),
    ("((cat))", [("cat", P * P)]),
    ("(((cat)))", [("cat", P**3)]),
    ("[cat]", [("cat", 1 / P)]),
    ("[[cat]]", [("cat", 1 / P / P)]),
    ("(cat:1.5)", [("cat", 1.5)]),
    ("(cat:0.5)", [("cat", 0.5)]),
    ("(cat: 1.25 )", [("cat", 1.25)]),
    ("(cat:.5)", [("cat", 0.5)]),
    ("(cat:2)", [("cat", 2.0)]),
    ("(cat:-1)", [("cat", -1.0)]),
    ("(cat:0)", [("cat", 0.0)]),
    ("a (red:1.5) [cat] dog", [("a ", 1.0), ("red", 1.5), (" ", 1.0), ("cat", 1 / P), (" dog", 1.0)]),
    ("a (b (c:1.5) d) e", [("a ", 1.0), ("b ", P), ("c", 1.5 * P), (" d", P), (" e", 1.0)]),
    ("((a:1.2))", [("a", 1.2 * P)]),
    ("[(a:1.5)]", [("a", 1.5 / P)]),
    ("(a [b])", [("a ", P), ("b", 1.0)]),
    ("(a) (b)", [("a", P), (" ", 1.0), ("b", P)]),
    ("(a)(b)", [("ab", P)]),  # adjacent equal weights merge
    ("a, (b, c:0.8), d", [("a, ", 1.0), ("b, c", 0.8), (", d", 1.0)]),
    # escapes
    (r"\(a\)", [("(a)", 1.0)]),
    (r"\[a\]", [("[a]", 1.0)]),
    (r"(\(a\))", [("(a)", P)]),
    (r"a\\b", [("a\\b", 1.0)]),
    (r"a\b", [("a\\b", 1.0)]),  # lone backslash kept literally
    (r"\\(a)", [("\\", 1.0), ("a", P)]),
    (r"smile \(emote\) (happy:1.2)", [("smile (emote) ", 1.0), ("happy", 1.2)]),
    # unbalanced / malformed
    ("(a", [("a", P)]),
    ("a (b", [("a ", 1.0), ("b", P)]),
    ("((a)", [("a", P * P)]),
    ("[a", [("a", 1 / P)]),
    ("a)", [("a)", 1.0)]),
    ("a]", [("a]", 1.0)]),
    ("a) (b", [("a) ", 1.0), ("b", P)]),
    ("(a [b) c]", [("a ", P), ("b", 1.0), (" c", 1 / P)]),
    (":1.2) a", [(":1.2) a", 1.0)]),
    ("a:b", [("a:b", 1.0)]),
    ("(a:b)", [("a:b", P)]),
    ("(a:1.2.3)", [("a:1.2.3", P)]),
    ("()", [("", 1.0)]),
    ("(:1.5)", [("", 1.0)]),
    # BREAK
    ("a BREAK b", [("a", 1.0), BREAK, ("b", 1.0)]),
    ("(a BREAK b)", [("a", P), BREAK, ("b", P)]),
    ("a BREAK BREAK b", [("a", 1.0), BREAK, BREAK, ("b", 1.0)]),
    ("BREAK", [BREAK]),
    ("aBREAK b", [("aBREAK b", 1.0)]),
    ("a break b", [("a break b", 1.0)]),
    ("(a:-1) BREAK (b:-1)", [("a", -1.0), BREAK, ("b", -1.0)]),
]


@pytest.mark.parametrize(("text", "expected"), PARSE_CASES, ids=[repr(c[0]) for c in PARSE_CASES])
def test_parse_prompt_attention(text, expected):
    got = parse_prompt_attention(text)
    assert [is_break(s) for s in got] == [s is BREAK for s in expected], got
    assert [s[0] for s in got] == [s[0] for s in expected], got
    assert [s[1] for s in got] == pytest.approx([s[1] for s in expected], rel=1e-12), got


def test_break_marker_is_identity_based():
    segs = parse_prompt_attention("(BRE()AK:-1)")  # text "BREAK" with weight -1, but not a BREAK
    assert segs == [("BREAK", -1.0)] and not is_break(segs[0])


# --------------------------------------------------------------------------------------------
# Tokenizing with weights and chunking
# --------------------------------------------------------------------------------------------


def _row(tokens: list[int]) -> list[int]:
    return [BOS_ID] + tokens + [EOS_ID] * (76 - len(tokens))


def test_tokenize_prompt_short_matches_plain():
    tp = tokenize_prompt("a photograph of an astronaut riding a horse")
    assert isinstance(tp, TokenizedPrompt)
    assert tp.ids.shape == (1, 77) and tp.ids.dtype == torch.long and tp.weights.dtype == torch.float32
    assert tp.ids[0].tolist() == tokenize("a photograph of an astronaut riding a horse")
    assert tp.token_count == 8 and torch.all(tp.weights == 1.0) and not tp.has_weights


def test_tokenize_prompt_weights_per_token():
    tp = tokenize_prompt("a photo of a (cat:1.5) [[dog]]")
    assert tp.ids[0].tolist() == _row([320, 1125, 539, 320, 2368, 1929])
    w = tp.weights[0].tolist()
    assert w[:6] == [1.0] * 5 + [1.5]
    assert w[6] == pytest.approx(1 / 1.21)
    assert w[7:] == [1.0] * 70  # EOS + padding keep weight 1
    assert tp.has_weights


def test_tokenize_prompt_empty():
    tp = tokenize_prompt("")
    assert tp.ids.tolist() == [_row([])] and torch.all(tp.weights == 1.0) and tp.token_count == 0


def test_chunking_200_tokens():
    tp = tokenize_prompt("cat " * 200)
    assert tp.ids.shape == (3, 77) and tp.weights.shape == (3, 77) and tp.token_count == 200
    assert tp.ids[:, 0].tolist() == [49406] * 3 and tp.ids[:, -1].tolist() == [49407] * 3
    assert tp.ids[0].tolist() == tp.ids[1].tolist() == _row([2368] * 75)
    assert tp.ids[2].tolist() == _row([2368] * 50)


def test_chunking_exactly_75_tokens_is_one_chunk():
    assert tokenize_prompt("cat " * 75).ids.shape == (1, 77)
    assert tokenize_prompt("cat " * 76).ids.shape == (2, 77)


def test_chunking_backtracks_to_last_comma():
    text = "cat " * 70 + ", " + "dog " * 10  # comma is token 71; the window fills at token 75
    tp = tokenize_prompt(text)
    assert tp.ids.tolist() == [_row([2368] * 70 + [267]), _row([1929] * 10)]
    plain = tokenize_prompt(text, comma_backtrack=0)
    assert plain.ids.tolist() == [_row([2368] * 70 + [267] + [1929] * 4), _row([1929] * 6)]
    # a comma further back than 20 tokens is not used
    far = tokenize_prompt("cat " * 50 + ", " + "dog " * 40)
    assert far.ids.tolist() == [_row([2368] * 50 + [267] + [1929] * 24), _row([1929] * 16)]


def test_chunking_moves_weights_with_tokens():
    tp = tokenize_prompt("cat " * 70 + ", " + "(dog:1.3) " * 10)
    assert tp.weights[0, 72:].tolist() == [1.0] * 5
    assert tp.weights[1, 1:11].tolist() == pytest.approx([1.3] * 10)


def test_break_starts_new_chunk():
    tp = tokenize_prompt("a cat BREAK a (dog:1.2)")
    assert tp.ids.tolist() == [_row([320, 2368]), _row([320, 1929])]
    assert tp.weights[1, 2].item() == pytest.approx(1.2)
    assert tokenize_prompt("BREAK a cat").ids.tolist() == [_row([]), _row([320, 2368])]
    assert tokenize_prompt("a cat BREAK").ids.tolist() == [_row([320, 2368])]


# --------------------------------------------------------------------------------------------
# Encoding with a tiny random CLIP text model
# --------------------------------------------------------------------------------------------

DIM = 64


@pytest.fixture(scope="module")
def text_model():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        hidden_size=DIM,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=49408,
        max_position_embeddings=77,
    )
    return CLIPTextModel(cfg).eval()


def _plain(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).last_hidden_state


def test_encode_plain_prompt(text_model):
    cond, pooled = encode_prompt(get_tokenizer(), text_model, "a photo of a cat")
    ids = torch.tensor([tokenize("a photo of a cat")])
    assert cond.shape == (1, 77, DIM) and pooled.shape == (1, DIM)
    assert torch.equal(cond, _plain(text_model, ids))
    with torch.no_grad():
        ref_pooled = text_model(input_ids=ids).pooler_output
    assert torch.allclose(pooled, ref_pooled)
    assert torch.equal(pooled[0], cond[0, 6])  # EOS of "a photo of a cat" is position 6


def test_encode_long_prompt_concatenates_chunks(text_model):
    tp = tokenize_prompt("cat " * 200)
    cond, pooled = encode_prompt(tp, text_model)
    assert cond.shape == (1, 231, DIM) and pooled.shape == (1, DIM)
    per_chunk = _plain(text_model, tp.ids)
    assert torch.allclose(cond.reshape(3, 77, DIM), per_chunk, atol=1e-6)
    assert torch.allclose(cond[0, 154:], _plain(text_model, tp.ids[2:3])[0], atol=1e-6)
    assert torch.allclose(pooled[0], per_chunk[0, 76], atol=1e-6)  # first chunk's EOS


@pytest.mark.parametrize("weighting", ["comfy", "a1111"])
def test_weight_one_is_plain(text_model, weighting):
    tok = get_tokenizer()
    plain, p0 = encode_prompt(tok, text_model, "a photo of a cat " * 20)
    ones, p1 = encode_prompt(tok, text_model, "(a photo of a cat:1.0) " * 20, weighting=weighting)
    assert torch.equal(plain, ones) and torch.equal(p0, p1)


def test_comfy_weighting_moves_only_weighted_tokens_away_from_empty(text_model):
    tok = get_tokenizer()
    plain, _ = encode_prompt(tok, text_model, "a photo of a cat")
    up, _ = encode_prompt(tok, text_model, "a photo of a (cat:1.5)")
    down, _ = encode_prompt(tok, text_model, "a photo of a (cat:0.5)")
    empty, _ = encode_prompt(tok, text_model, "")
    cat = 5  # BOS a photo of a cat
    others = [i for i in range(77) if i != cat]
    assert torch.equal(up[0, others], plain[0, others]) and torch.equal(down[0, others], plain[0, others])
    d = plain[0, cat] - empty[0, cat]
    assert torch.allclose(up[0, cat], empty[0, cat] + 1.5 * d, atol=1e-6)
    assert torch.allclose(down[0, cat], empty[0, cat] + 0.5 * d, atol=1e-6)
    assert (up[0, cat] - empty[0, cat]).norm().item() == pytest.approx(1.5 * d.norm().item(), rel=1e-5)
    assert d.norm().item() > 0.1  # the test means something


def test_comfy_weighting_in_second_chunk(text_model):
    tok = get_tokenizer()
    plain, _ = encode_prompt(tok, text_model, "cat " * 80 + "dog")
    weighted, _ = encode_prompt(tok, text_model, "cat " * 80 + "(dog:2)")
    empty, _ = encode_prompt(tok, text_model, "")
    pos = 77 + 1 + 5  # chunk 2: BOS + 5 cats + dog
    changed = (weighted != plain).any(dim=-1)[0].nonzero().flatten().tolist()
    assert changed == [pos]
    assert torch.allclose(weighted[0, pos], empty[0, 6] + 2 * (plain[0, pos] - empty[0, 6]), atol=1e-6)


def test_a1111_weighting_multiplies_then_restores_mean(text_model):
    tok = get_tokenizer()
    plain, _ = encode_prompt(tok, text_model, "a photo of a cat")
    up, _ = encode_prompt(tok, text_model, "a photo of a (cat:1.5)", weighting="a1111")
    w = torch.ones(77)
    w[5] = 1.5
    expected = plain[0] * w[:, None]
    expected = expected * (plain[0].mean() / expected.mean())
    assert torch.allclose(up[0], expected, atol=1e-6)
    assert up.mean().item() == pytest.approx(plain.mean().item(), abs=1e-6)
    none, _ = encode_prompt(tok, text_model, "a photo of a (cat:1.5)", weighting="none")
    assert torch.equal(none, plain)


def test_clip_skip_2_is_normed_penultimate_layer(text_model):
    tp = tokenize_prompt("a photo of a cat")
    cond2, pooled2 = encode_prompt(tp, text_model, clip_skip=2)
    cond1, pooled1 = encode_prompt(tp, text_model, clip_skip=1)
    with torch.no_grad():
        out = text_model(input_ids=tp.ids, output_hidden_states=True)
        expected = text_model.final_layer_norm(out.hidden_states[-2])
        assert torch.allclose(text_model.final_layer_norm(out.hidden_states[-1]), cond1[0], atol=1e-6)
    assert torch.allclose(cond2[0], expected[0], atol=1e-6)
    assert not torch.allclose(cond1, cond2)
    assert torch.equal(pooled1, pooled2)  # pooled always from the last layer
    z, last = encode_tokens(text_model, tp.ids, clip_skip=2)
    assert torch.allclose(z, expected, atol=1e-6)
    with pytest.raises(ValueError, match="only 2 layers"):
        encode_prompt(tp, text_model, clip_skip=3)
    with pytest.raises(ValueError):
        encode_prompt(tp, text_model, clip_skip=0)


def test_encode_prompt_argument_checks(text_model):
    tp = tokenize_prompt("cat")
    with pytest.raises(ValueError, match="not both"):
        encode_prompt(tp, text_model, "cat")
    with pytest.raises(ValueError, match="text is required"):
        encode_prompt(get_tokenizer(), text_model)
    with pytest.raises(ValueError, match="weighting"):
        encode_prompt(None, text_model, "cat", weighting="bogus")  # type: ignore[arg-type]
    cond, _ = encode_prompt(None, text_model, "cat")  # None = the shared tokenizer
    assert cond.shape == (1, 77, DIM)

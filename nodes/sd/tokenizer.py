"""The CLIP BPE tokenizer used by Stable Diffusion's text encoder, loaded offline from package data.

The vocabulary (49408 tokens) and the 48894 BPE merges ship in ``nodes/sd/data`` as
``vocab.json.gz`` and ``merges.txt.gz``, derived once from OpenAI's
``bpe_simple_vocab_16e6.txt.gz`` by ``nodes/sd/data/make_vocab.py``. Nothing here touches
the network or the Hugging Face hub: the tokenizer is built in memory from that data through
``transformers.CLIPTokenizer`` and then checked, so a silently broken load (wrong keywords, a
changed constructor) fails loudly instead of producing a tiny vocabulary.

transformers compatibility:

* 5.x: ``CLIPTokenizer`` is the fast (Rust ``tokenizers``) class and takes ``vocab=`` (a dict)
  and ``merges=`` (a list of ``(left, right)`` tuples). The 4.x keywords ``vocab_file=`` /
  ``merges_file=`` are swallowed by ``**kwargs`` and give a 2-token vocabulary; strings such
  as ``"a b"`` in ``merges`` are rejected.
* 4.x: there is no in-memory constructor, so the data is written to a temporary folder and
  loaded with ``CLIPTokenizerFast(vocab_file=..., merges_file=...)`` (the fast class, so the
  text normalisation is the same as 5.x's and does not depend on whether ``ftfy`` is installed).

Either way ``model_max_length`` is set to 77: without it, ``truncation=True`` does not truncate.
The pad token is ``<|endoftext|>`` (49407), as SD 1.x pipelines use.
"""

from __future__ import annotations

import gzip
import inspect
import json
import tempfile
import threading
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "BOS_ID",
    "COMMA_ID",
    "EOS_ID",
    "MAX_LENGTH",
    "PAD_ID",
    "VOCAB_SIZE",
    "TokenizerLoadError",
    "get_tokenizer",
    "load_merges",
    "load_vocab",
    "tokenize",
]

VOCAB_SIZE = 49408
BOS_ID = 49406  # <|startoftext|>
EOS_ID = 49407  # <|endoftext|>
PAD_ID = EOS_ID  # SD 1.x pads with <|endoftext|>
COMMA_ID = 267  # ",</w>"
MAX_LENGTH = 77  # BOS + 75 tokens + EOS
N_MERGES = 49152 - 256 - 2  # 48894

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"

_DATA_PACKAGE = __package__ or "latentgraph.nodes.sd"
# Known encodings checked after every load: a tokenizer that lost its merges or vocabulary
# cannot reproduce these.
_SELF_CHECK = {
    "a photograph of an astronaut riding a horse": [BOS_ID, 320, 8853, 539, 550, 18376, 6765, 320, 4558, EOS_ID],
}


class TokenizerLoadError(RuntimeError):
    """The CLIP tokenizer could not be built from the shipped data, or came out wrong."""


def _read_data(name: str) -> str:
    raw = resources.files(_DATA_PACKAGE).joinpath("data", name).read_bytes()
    return gzip.decompress(raw).decode("utf-8")


@lru_cache(maxsize=1)
def _vocab() -> dict[str, int]:
    vocab = json.loads(_read_data("vocab.json.gz"))
    if len(vocab) != VOCAB_SIZE or vocab.get(BOS_TOKEN) != BOS_ID or vocab.get(EOS_TOKEN) != EOS_ID:
        raise TokenizerLoadError(f"shipped vocab.json.gz is not CLIP's 49408-token vocabulary ({len(vocab)} entries)")
    return vocab


@lru_cache(maxsize=1)
def _merges() -> tuple[tuple[str, str], ...]:
    lines = _read_data("merges.txt.gz").split("\n")
    merges = tuple(tuple(line.split(" ")) for line in lines if line and not line.startswith("#version"))
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise TokenizerLoadError(f"shipped merges.txt.gz has {len(merges)} merges, expected {N_MERGES}")
    return merges  # type: ignore[return-value]


def load_vocab() -> dict[str, int]:
    """CLIP's vocabulary, token -> id (a fresh copy; 49408 entries)."""
    return dict(_vocab())


def load_merges() -> list[tuple[str, str]]:
    """CLIP's BPE merges in rank order (a fresh copy; 48894 ``(left, right)`` pairs)."""
    return list(_merges())


def _build() -> PreTrainedTokenizerBase:
    import transformers

    vocab, merges = _vocab(), _merges()
    common = dict(
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        model_max_length=MAX_LENGTH,
    )
    params = inspect.signature(transformers.CLIPTokenizer.__init__).parameters
    if "vocab" in params and "merges" in params:  # transformers >= 5
        tok = transformers.CLIPTokenizer(vocab=dict(vocab), merges=list(merges), **common)
    else:  # transformers 4.x: file-based constructor only
        with tempfile.TemporaryDirectory(prefix="latentgraph-clip-") as tmp:
            vocab_file, merges_file = Path(tmp, "vocab.json"), Path(tmp, "merges.txt")
            vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
            merges_file.write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8")
            tok = transformers.CLIPTokenizerFast(vocab_file=str(vocab_file), merges_file=str(merges_file), **common)
    _check(tok)
    return tok


def _check(tok: PreTrainedTokenizerBase) -> None:
    problems = []
    if len(tok) != VOCAB_SIZE:
        problems.append(f"vocabulary has {len(tok)} tokens, expected {VOCAB_SIZE}")
    ids = (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    if ids != (BOS_ID, EOS_ID, PAD_ID):
        problems.append(f"bos/eos/pad ids are {ids}, expected {(BOS_ID, EOS_ID, PAD_ID)}")
    if tok.model_max_length != MAX_LENGTH:
        problems.append(f"model_max_length is {tok.model_max_length}, expected {MAX_LENGTH}")
    if not problems:
        for text, expected in _SELF_CHECK.items():
            got = tok(text)["input_ids"]
            if got != expected:
                problems.append(f"{text!r} encodes to {got}, expected {expected}")
    if problems:
        import transformers

        raise TokenizerLoadError(
            f"CLIP tokenizer built with transformers {transformers.__version__} is wrong: " + "; ".join(problems)
        )


_lock = threading.Lock()
_tokenizer: PreTrainedTokenizerBase | None = None


def get_tokenizer() -> PreTrainedTokenizerBase:
    """The process-wide CLIP tokenizer (a ``transformers.CLIPTokenizer``), built on first use.

    Offline: it is made from the package data, never downloaded. Raises ``TokenizerLoadError``
    if the result is not CLIP's 49408-token tokenizer with 77-token truncation.
    """
    global _tokenizer
    if _tokenizer is None:
        with _lock:
            if _tokenizer is None:
                _tokenizer = _build()
    return _tokenizer


def tokenize(text: str, tokenizer: PreTrainedTokenizerBase | None = None) -> list[int]:
    """Plain (unweighted) encoding as SD pipelines do it: ``[BOS] + tokens + [EOS]``, truncated
    to 77 ids (text tokens after the 75th are dropped; the last kept id is EOS) and padded with 49407."""
    tok = tokenizer if tokenizer is not None else get_tokenizer()
    return tok(text, padding="max_length", max_length=MAX_LENGTH, truncation=True)["input_ids"]

"""Prompt emphasis syntax, 75-token chunking and CLIP text encoding for Stable Diffusion.

Syntax (the A1111 / ComfyUI conventions users already write)::

    (word)          weight x 1.1            ((word))   x 1.21 (nested groups multiply)
    [word]          weight / 1.1            [[word]]   / 1.21
    (word:1.5)      weight x 1.5 (replaces the 1.1 of the parentheses; ``(a (b:1.5))`` gives b x 1.65)
    \\( \\) \\[ \\] \\\\   literal brackets and backslash
    BREAK           (upper case, a separate word) starts a new 75-token chunk

Parsing follows A1111's ``parse_prompt_attention`` with these documented choices:

* An unclosed ``(`` or ``[`` applies to the rest of the prompt, as if closed at the end.
* A stray ``)`` or ``]`` (nothing open of that kind) is kept as literal text; so is ``:1.2)``
  with no ``(`` open. A ``:`` that is not part of ``:<number>)`` is literal text.
* The weight must be a plain decimal number (``1``, ``1.5``, ``.5``, ``-0.3``); anything else
  (``(a:1.2.3)``, ``(a:x)``) leaves the ``:...`` as literal text and the ``)`` closes the group
  with the usual x 1.1.
* A backslash that does not escape ``( ) [ ] \\`` is kept as a literal backslash (A1111 drops it).
* ``BREAK`` is recognised anywhere outside escapes, also inside brackets (where A1111 garbles it).
* Adjacent segments with equal weights are merged, empty segments are dropped; an empty prompt
  parses to ``[("", 1.0)]``.

Chunking follows A1111: tokens are grouped in windows of 75; each window becomes
``[BOS] + tokens + [EOS] + padding`` = 77 ids, padded with the end token (49407: SD1.x's CLIP and
SDXL's CLIP-L) or token 0 ("!": OpenCLIP in SD2.x and SDXL), as each encoder was trained. When a window fills up and the
last comma in it is at most ``comma_backtrack`` (default 20, A1111's default; 0 disables) tokens
back, the tokens after that comma move to the next window, so a phrase is not cut in half.
``BREAK`` pads the current window and starts a new one. BOS/EOS/padding positions get weight 1.

Encoding: every chunk goes through the CLIP text model on its own 77 positions (no attention
mask, like SD pipelines), and the chunks are concatenated along the token axis. Weights are
applied after the text model, by default the ComfyUI way (``weighting="comfy"``)::

    z = z_empty + (z - z_empty) * w

where ``z_empty`` is the encoding of the empty prompt at the same positions: only tokens with
``w != 1`` change, moving away from (w > 1) or towards (w < 1) the empty-prompt encoding.
``weighting="a1111"`` is A1111's "Original" emphasis instead (``z *= w``, then each chunk is
rescaled so its mean equals the unweighted mean; this changes every token slightly), and
``weighting="none"`` ignores the weights.

Textual-inversion embeddings (ComfyUI's syntax): ``embedding:name`` at the start of a word names
an embedding file (``name`` runs to the next whitespace, trailing commas excluded; it may hold a
sub-folder and may leave out the extension), also inside emphasis: ``(embedding:name:1.2)``. Its
vectors take one position each, in place of token embeddings, with the segment's weight. They
are never split across two windows: an embedding that does not fit in what is left of the
current window starts the next one (A1111's rule). Tokenizing needs a lookup (a callable or a
mapping, name -> ``embeddings.Embedding``) that raises ``EmbeddingNotFound`` for unknown names;
this module reads no files. Without a lookup a prompt that names an embedding is an error, never
silently read as text. Encoding feeds the vectors through a forward hook on the text model's
token embedding (transformers' CLIP text models take only ``input_ids``), so positions, the
causal mask and the pooled vector (at the first end token) are the model's own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple

import torch

from latentgraph.nodes.sd.embeddings import Embedding, EmbeddingError, EmbeddingNotFound
from latentgraph.nodes.sd.spec import FamilySpec
from latentgraph.nodes.sd.tokenizer import BOS_ID, COMMA_ID, EOS_ID, MAX_LENGTH, PAD_ID, get_tokenizer

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "BREAK",
    "CHUNK_TOKENS",
    "Segment",
    "TokenizedPrompt",
    "embedding_names",
    "encode_prompt",
    "encode_tokens",
    "is_break",
    "parse_prompt_attention",
    "tokenize_prompt",
]

CHUNK_TOKENS = MAX_LENGTH - 2  # 75 text tokens per chunk
ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
Weighting = Literal["comfy", "a1111", "none"]
EmbeddingLookup = Callable[[str], Embedding] | Mapping[str, Embedding]
EMBEDDING_PLACEHOLDER_ID = 0  # the id at an embedding vector's position (its token embedding is replaced)


class Segment(NamedTuple):
    """A run of prompt text and its emphasis weight. Compares equal to a plain ``(text, weight)`` tuple."""

    text: str
    weight: float


#: The marker ``parse_prompt_attention`` emits for ``BREAK``; test with ``is_break`` (identity),
#: not by value. Its value mirrors A1111's ``["BREAK", -1]`` marker.
BREAK = Segment("BREAK", -1.0)


def is_break(segment: tuple[str, float]) -> bool:
    """True for the ``BREAK`` marker produced by ``parse_prompt_attention``."""
    return segment is BREAK


_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)"
_RE_ATTENTION = re.compile(
    rf"""
    \\[()\[\]\\]            # escaped bracket or backslash
    | \\                    # a lone backslash: literal
    | \(                    # open round
    | \[                    # open square
    | :\s*({_NUMBER})\s*\)  # close round with an explicit weight
    | \)                    # close round
    | \]                    # close square
    | [^\\()\[\]:]+         # plain text
    | :                     # a colon that is not a weight
    """,
    re.X,
)
_RE_BREAK = re.compile(r"\s*\bBREAK\b\s*")


def parse_prompt_attention(text: str) -> list[Segment]:
    """Split a prompt into ``(text, weight)`` segments, with ``BREAK`` markers (see the module doc).

    >>> [tuple(s) for s in parse_prompt_attention("a (red:1.5) [cat] BREAK dog")]
    [('a ', 1.0), ('red', 1.5), (' ', 1.0), ('cat', 0.9090909090909091), ('BREAK', -1.0), ('dog', 1.0)]
    """
    res: list[list] = []  # [text, weight, is_break]
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for item in res[start:]:
            if not item[2]:
                item[1] *= multiplier

    for m in _RE_ATTENTION.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            res.append([tok[1:] if len(tok) == 2 else tok, 1.0, False])
        elif tok == "(":
            round_open.append(len(res))
        elif tok == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply_range(round_open.pop(), float(weight))
        elif tok == ")" and round_open:
            multiply_range(round_open.pop(), ROUND_MULTIPLIER)
        elif tok == "]" and square_open:
            multiply_range(square_open.pop(), SQUARE_MULTIPLIER)
        else:
            for i, part in enumerate(_RE_BREAK.split(tok)):
                if i > 0:
                    res.append([BREAK.text, BREAK.weight, True])
                res.append([part, 1.0, False])

    for start in round_open:  # unclosed: close at the end
        multiply_range(start, ROUND_MULTIPLIER)
    for start in square_open:
        multiply_range(start, SQUARE_MULTIPLIER)

    out: list[Segment] = []
    for text_, weight_, brk in res:
        if brk:
            out.append(BREAK)
        elif text_:
            if out and not is_break(out[-1]) and out[-1].weight == weight_:
                out[-1] = Segment(out[-1].text + text_, out[-1].weight)
            else:
                out.append(Segment(text_, float(weight_)))
    return out or [Segment("", 1.0)]


_RE_EMBEDDING = re.compile(r"(?<!\S)embedding:(\S+)")


def _split_embeddings(text: str) -> list[tuple[str, bool]]:
    """A segment's text as ``(piece, is_embedding_name)`` in order; ``[(text, False)]`` when it
    names no embedding. Trailing commas of a name stay text (``embedding:x, cat``)."""
    pieces: list[tuple[str, bool]] = []
    start = 0
    for match in _RE_EMBEDDING.finditer(text):
        name = match.group(1).rstrip(",")
        if not name:
            continue
        pieces += [(text[start:match.start()], False), (name, True)]
        start = match.start(1) + len(name)
    if not pieces:
        return [(text, False)]
    pieces.append((text[start:], False))
    return [piece for piece in pieces if piece[0]]


def embedding_names(text: str) -> list[str]:
    """The embedding names a prompt uses (``embedding:name``, emphasis included), each once, in order.

    >>> embedding_names("a (embedding:styles/ink:1.2) cat, embedding:bad-hands, embedding:ink")
    ['styles/ink', 'bad-hands', 'ink']
    """
    if "embedding:" not in text:
        return []
    names: dict[str, None] = {}
    for segment in parse_prompt_attention(text):
        if not is_break(segment):
            names.update((piece, None) for piece, is_name in _split_embeddings(segment.text) if is_name)
    return list(names)


def _lookup_embedding(lookup: EmbeddingLookup | None, name: str) -> Embedding:
    if lookup is None:
        raise EmbeddingNotFound(f"the prompt names embedding {name!r} (embedding:{name}), but no embeddings "
                                "were given to look it up")
    if isinstance(lookup, Mapping):
        if name not in lookup:
            known = ", ".join(repr(key) for key in lookup) or "none"
            raise EmbeddingNotFound(f"no embedding named {name!r} (embeddings given: {known})")
        return lookup[name]
    return lookup(name)


@dataclass
class TokenizedPrompt:
    """A prompt as CLIP input: ``ids`` and per-token ``weights``, both ``[chunks, 77]``.

    Every row is ``[BOS] + up to 75 tokens + [EOS]``, short rows padded with ``pad_id`` after the EOS.
    ``token_count`` is the number of text positions (tokens and embedding vectors; no
    BOS/EOS/padding); ``segments`` is the parse.

    Embeddings: ``slots`` (int64 ``[chunks, 77]``, None when the prompt uses none) is -1 where
    ``ids`` holds a token and ``k >= 0`` where the position takes row ``k`` of the vectors of
    ``embeddings`` (each used embedding once, in order of first use) stacked; ``ids`` holds
    ``EMBEDDING_PLACEHOLDER_ID`` there.
    """

    ids: torch.Tensor  # int64 [chunks, 77]
    weights: torch.Tensor  # float32 [chunks, 77]
    token_count: int = 0
    segments: list[Segment] = field(default_factory=list)
    slots: torch.Tensor | None = None  # int64 [chunks, 77]
    embeddings: tuple[Embedding, ...] = ()

    @property
    def num_chunks(self) -> int:
        return int(self.ids.shape[0])

    @property
    def has_weights(self) -> bool:
        return bool((self.weights != 1.0).any())

    def padded_with(self, pad_id: int) -> "TokenizedPrompt":
        """The same prompt, end-token padded, with every position after each row's end token set to
        `pad_id` (how another text encoder of the family pads), without tokenizing again."""
        positions = torch.arange(self.ids.shape[1])
        last_text = (positions * (self.ids != EOS_ID)).amax(dim=1, keepdim=True)  # BOS when the row is empty
        ids = torch.where(positions > last_text + 1, torch.full_like(self.ids, pad_id), self.ids)
        return TokenizedPrompt(ids=ids, weights=self.weights, token_count=self.token_count, segments=self.segments,
                               slots=self.slots, embeddings=self.embeddings)

    def with_windows(self, count: int) -> "TokenizedPrompt":
        """The prompt with empty-prompt windows (``[BOS, EOS]``, end-token padded, weight 1)
        appended until it has `count` windows (ComfyUI's way to give two encoders that read
        different texts the same number of positions); unchanged when it has that many already."""
        extra = count - self.num_chunks
        if extra <= 0:
            return self
        empty = _empty_chunk_ids(EOS_ID)[None].expand(extra, -1)
        slots = None if self.slots is None else torch.cat([self.slots, torch.full_like(empty, -1)])
        return TokenizedPrompt(ids=torch.cat([self.ids, empty]), weights=torch.cat([self.weights, torch.ones(empty.shape)]),
                               token_count=self.token_count, segments=self.segments, slots=slots,
                               embeddings=self.embeddings)

    @property
    def has_embeddings(self) -> bool:
        return self.slots is not None and bool((self.slots >= 0).any())

    def vector_tables(self, encoders: Sequence[tuple[str, int]]) -> dict[str, torch.Tensor]:
        """Per text encoder (``(name, width)`` pairs), the rows ``slots`` index: the vectors each
        embedding gives that encoder (``Embedding.vectors_for``, which raises when one does not fit)."""
        chosen = [embedding.vectors_for(encoders) for embedding in self.embeddings]
        return {name: torch.cat([c[name] for c in chosen]) if chosen else torch.zeros(0, width)
                for name, width in encoders}


def tokenize_prompt(
    text: str,
    tokenizer: PreTrainedTokenizerBase | None = None,
    *,
    comma_backtrack: int = 20,
    pad_id: int = PAD_ID,
    embeddings: EmbeddingLookup | None = None,
) -> TokenizedPrompt:
    """Parse emphasis, tokenize each segment and pack the tokens into 77-id chunks (A1111's rules).

    ``tokenizer`` defaults to the shared CLIP tokenizer (``nodes.sd.tokenizer.get_tokenizer``);
    ``pad_id`` fills each chunk after its end token (EOS for SD1.x, 0 for OpenCLIP encoders).
    ``embeddings`` looks up the embeddings the prompt names (see the module doc); unknown names
    raise ``EmbeddingNotFound``.
    """
    tok = tokenizer if tokenizer is not None else get_tokenizer()
    segments = parse_prompt_attention(text)
    # (text or embedding name, weight, is_embedding) per piece; None for BREAK
    pieces: list[tuple[str, float, bool] | None] = []
    for seg in segments:
        if is_break(seg):
            pieces.append(None)
        else:
            pieces.extend((piece, seg.weight, is_name) for piece, is_name in _split_embeddings(seg.text))
    texts = [p[0] for p in pieces if p is not None and not p[2]]
    encoded = iter(tok(texts, add_special_tokens=False, verbose=False)["input_ids"] if texts else [])

    used: dict[str, tuple[Embedding, int]] = {}  # name -> (embedding, its first row in the stacked vectors)
    rows = 0
    chunks: list[tuple[list[int], list[float], list[int]]] = []
    cur_ids: list[int] = []
    cur_w: list[float] = []
    cur_slots: list[int] = []
    last_comma = -1
    count = 0

    def next_chunk() -> None:
        nonlocal cur_ids, cur_w, cur_slots, last_comma
        pad = CHUNK_TOKENS - len(cur_ids)
        chunks.append(([BOS_ID] + cur_ids + [EOS_ID] + [pad_id] * pad, [1.0] + cur_w + [1.0] * (pad + 1),
                       [-1] + cur_slots + [-1] * (pad + 1)))
        cur_ids, cur_w, cur_slots, last_comma = [], [], [], -1

    def make_room() -> None:
        """Before the next item: move the words after a recent comma on, or start a new chunk, when full."""
        nonlocal cur_ids, cur_w, cur_slots
        if (
            comma_backtrack > 0
            and len(cur_ids) == CHUNK_TOKENS
            and last_comma != -1
            and len(cur_ids) - last_comma <= comma_backtrack
        ):
            cut = last_comma + 1
            moved = cur_ids[cut:], cur_w[cut:], cur_slots[cut:]
            cur_ids, cur_w, cur_slots = cur_ids[:cut], cur_w[:cut], cur_slots[:cut]
            next_chunk()
            cur_ids, cur_w, cur_slots = moved
        if len(cur_ids) == CHUNK_TOKENS:
            next_chunk()

    for piece in pieces:
        if piece is None:
            next_chunk()
            continue
        value, weight, is_name = piece
        if is_name:
            if value not in used:
                embedding = _lookup_embedding(embeddings, value)
                used[value] = (embedding, rows)
                rows += embedding.num_vectors
            embedding, first = used[value]
            n = embedding.num_vectors
            if n > CHUNK_TOKENS:
                raise EmbeddingError(f"embedding {value!r} has {n} vectors; at most {CHUNK_TOKENS} fit in one window")
            make_room()
            if len(cur_ids) + n > CHUNK_TOKENS:  # never split an embedding across windows
                next_chunk()
            cur_ids += [EMBEDDING_PLACEHOLDER_ID] * n
            cur_w += [weight] * n
            cur_slots += range(first, first + n)
            count += n
            continue
        for token in next(encoded):
            count += 1
            if token == COMMA_ID:
                last_comma = len(cur_ids)
                if len(cur_ids) == CHUNK_TOKENS:
                    next_chunk()
            else:
                make_room()
            cur_ids.append(token)
            cur_w.append(weight)
            cur_slots.append(-1)
    if cur_ids or not chunks:
        next_chunk()

    ids = torch.tensor([c[0] for c in chunks], dtype=torch.long)
    weights = torch.tensor([c[1] for c in chunks], dtype=torch.float32)
    slots = torch.tensor([c[2] for c in chunks], dtype=torch.long) if used else None
    return TokenizedPrompt(ids=ids, weights=weights, token_count=count, segments=segments, slots=slots,
                           embeddings=tuple(embedding for embedding, _ in used.values()))


def _empty_chunk_ids(pad_id: int = PAD_ID) -> torch.Tensor:
    return torch.tensor([BOS_ID] + [EOS_ID] + [pad_id] * (MAX_LENGTH - 2), dtype=torch.long)


def text_model_width(text_model: torch.nn.Module) -> int:
    """The width of a CLIP text model's token embeddings (what an embedding's vectors must match)."""
    return int(text_model.get_input_embeddings().embedding_dim)


@contextmanager
def _vectors_in_place(text_model: torch.nn.Module, slots: torch.Tensor, vectors: torch.Tensor):
    """While active, the text model's token embedding gives ``vectors[k]`` at the positions where
    ``slots`` is ``k >= 0`` (its own output elsewhere), for calls from this thread only (another
    thread may be running the same model)."""
    owner = threading.get_ident()

    def replace_rows(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if threading.get_ident() != owner:
            return None
        if tuple(args[0].shape) != tuple(slots.shape):
            raise RuntimeError(f"token embedding called with ids {list(args[0].shape)}, expected {list(slots.shape)}")
        where = slots.to(output.device)
        rows = vectors.to(device=output.device, dtype=output.dtype)[where.clamp(min=0)]
        return torch.where((where >= 0)[..., None], rows, output)

    handle = text_model.get_input_embeddings().register_forward_hook(replace_rows)
    try:
        yield
    finally:
        handle.remove()


def encode_tokens(text_model: torch.nn.Module, ids: torch.Tensor, clip_skip: int = 1,
                  final_norm: bool = True, *, slots: torch.Tensor | None = None,
                  vectors: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``ids`` ``[batch, 77]`` through a CLIP text model; returns ``(hidden [batch, 77, dim], last [batch, 77, dim])``.

    ``hidden`` is the layer chosen by ``clip_skip`` (``clip_skip=1``: the last layer, i.e.
    ``last_hidden_state``; ``clip_skip=2``: ``final_layer_norm(hidden_states[-2])``, the SD 1.x
    "CLIP skip 2"), with the final layer norm applied unless ``final_norm`` is False (SDXL's
    encoders). ``last`` is always the last layer's normed output (what the pooled vector comes from).
    ``slots`` / ``vectors``: embedding vectors fed in place of the token embeddings where ``slots``
    (like ``ids``) is ``k >= 0`` (row ``k`` of ``vectors`` ``[rows, dim]``; see TokenizedPrompt).
    """
    if slots is not None and bool((slots >= 0).any()):
        if vectors is None:
            raise ValueError("slots name embedding vectors but no vectors were given")
        with _vectors_in_place(text_model, slots, vectors):
            return encode_tokens(text_model, ids, clip_skip, final_norm)
    if clip_skip < 1:
        raise ValueError(f"clip_skip must be >= 1 (1 = last layer), got {clip_skip}")
    # transformers 5.x CLIPTextModel holds final_layer_norm itself; 4.x CLIPTextModel and
    # CLIPTextModelWithProjection keep it in .text_model.
    final_layer_norm = getattr(text_model, "final_layer_norm", None)
    if final_layer_norm is None:
        final_layer_norm = text_model.text_model.final_layer_norm
    device = next(text_model.parameters()).device
    out = text_model(input_ids=ids.to(device), output_hidden_states=clip_skip > 1 or not final_norm)
    last = out.last_hidden_state
    if clip_skip == 1 and final_norm:
        return last, last
    hidden_states = out.hidden_states
    n_layers = len(hidden_states) - 1
    if clip_skip > n_layers:
        raise ValueError(f"clip_skip={clip_skip} but the text model has only {n_layers} layers")
    hidden = hidden_states[-clip_skip]
    return (final_layer_norm(hidden) if final_norm else hidden), last


def encode_prompt(
    tokenizer_or_tokens: PreTrainedTokenizerBase | TokenizedPrompt | None,
    text_model: torch.nn.Module,
    text: str | None = None,
    clip_skip: int = 1,
    *,
    final_norm: bool = True,
    weighting: Weighting = "comfy",
    comma_backtrack: int = 20,
    pad_id: int = PAD_ID,
    embeddings: EmbeddingLookup | None = None,
    vectors: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Encode a prompt with emphasis weights into SD conditioning.

    ``tokenizer_or_tokens``: a CLIP tokenizer (``text`` is then required), ``None`` for the shared
    one, or an already ``TokenizedPrompt`` (then ``text`` must be ``None``).
    ``text_model``: a ``transformers.CLIPTextModel`` (``CLIPTextModelWithProjection`` also works;
    its projection is applied to the pooled vector).
    ``embeddings``: looks up the embeddings ``text`` names. ``vectors``: the rows the tokens'
    ``slots`` index, for this text model (default: each embedding's set as wide as the model).

    Returns ``(conditioning [1, 77 * chunks, dim], pooled [1, dim])``, in the model's dtype and on
    its device. ``pooled`` is the last layer's normed output at the first EOS of the first chunk,
    whatever ``clip_skip`` is (as ComfyUI and diffusers do). Runs under ``torch.no_grad()``.
    """
    if isinstance(tokenizer_or_tokens, TokenizedPrompt):
        if text is not None:
            raise ValueError("pass either a TokenizedPrompt or a tokenizer and text, not both")
        tokens = tokenizer_or_tokens
    else:
        if text is None:
            raise ValueError("text is required when a tokenizer (or None) is given")
        tokens = tokenize_prompt(text, tokenizer_or_tokens, comma_backtrack=comma_backtrack, pad_id=pad_id,
                                 embeddings=embeddings)
    if weighting not in ("comfy", "a1111", "none"):
        raise ValueError(f"unknown weighting {weighting!r}; use 'comfy', 'a1111' or 'none'")

    ids, weights = tokens.ids, tokens.weights
    n = ids.shape[0]
    apply = weighting != "none" and tokens.has_weights
    batch = torch.cat([ids, _empty_chunk_ids(pad_id)[None]]) if apply and weighting == "comfy" else ids
    slots = None
    if tokens.has_embeddings:
        assert tokens.slots is not None
        if vectors is None:
            vectors = tokens.vector_tables([("text encoder", text_model_width(text_model))])["text encoder"]
        slots = torch.cat([tokens.slots, torch.full_like(tokens.slots[:1], -1)]) if len(batch) > n else tokens.slots

    with torch.no_grad():
        if slots is None:
            z, last = encode_tokens(text_model, batch, clip_skip, final_norm)
        else:
            z, last = encode_tokens(text_model, batch, clip_skip, final_norm, slots=slots, vectors=vectors)
        w = weights.to(device=z.device, dtype=z.dtype)[..., None]  # [n, 77, 1]
        if apply and weighting == "comfy":
            z_empty = z[n:]
            z = z[:n]
            z = torch.where(w != 1.0, z_empty + (z - z_empty) * w, z)
        elif apply:  # a1111 "Original": multiply, then restore each chunk's mean
            z = z[:n]
            original_mean = z.mean(dim=(1, 2), keepdim=True)
            z = z * w
            z = z * (original_mean / z.mean(dim=(1, 2), keepdim=True))

        eos_pos = int((ids[0] == EOS_ID).nonzero()[0, 0])
        pooled = last[0:1, eos_pos]
        projection = getattr(text_model, "text_projection", None)
        if projection is not None:
            pooled = projection(pooled)

    return z[:n].reshape(1, n * MAX_LENGTH, z.shape[-1]), pooled


def encode_text(encoders: Mapping[str, torch.nn.Module], spec: FamilySpec, text: str | Mapping[str, str],
                clip_skip: int | None = None,
                embeddings: EmbeddingLookup | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A prompt as the family's conditioning.

    Each text encoder of `spec` encodes the prompt (the same 75-token windows for all of them,
    each padded as that encoder was trained) and hands over the hidden state of the layer the
    family was trained on, with or without the final layer norm as the spec says. `clip_skip`
    picks the layer for every encoder instead, counted from the end: 1 the last layer, 2 the one
    before it (what SD2.x and SDXL use by default)... The hidden states are concatenated along
    channels into the cross-attention context (SDXL: 768 + 1280). The pooled vector is the one of
    the encoder the spec marks `pooled` (SDXL's bigG, projected), else the first encoder's.
    `embeddings` looks up the textual-inversion embeddings the prompt names (`embedding:name`; a
    callable or a mapping, name -> Embedding): each encoder takes its own vectors of each
    (`Embedding.vectors_for`: SDXL files give CLIP-L and bigG theirs; a file with one set goes to
    the encoder as wide as it). Unknown names raise EmbeddingNotFound, embeddings that fit no
    encoder EmbeddingError.
    `text` may instead give each encoder its own prompt (a mapping, encoder name -> text, as
    SDXL's text_g / text_l): the one with fewer 75-token windows then gets empty-prompt windows
    appended until both have as many (ComfyUI's CLIPTextEncodeSDXL), since the encoders' outputs
    are joined position by position.
    Returns (context [1, tokens, dim], pooled [1, dim])."""
    contexts, pooled, first_pooled = [], None, None
    names = [encoder.name for encoder in spec.text_encoders]
    if isinstance(text, str):
        texts = dict.fromkeys(names, text)
    elif set(text) == set(names):
        texts = dict(text)
    else:
        raise ValueError(f"{spec.label} prompts are read by {', '.join(names)}; got texts for {', '.join(text) or 'none'}")
    # once per text: the encoders differ only in their padding
    tokenized = {t: tokenize_prompt(t, pad_id=EOS_ID, embeddings=embeddings) for t in dict.fromkeys(texts.values())}
    windows = max(tokens.num_chunks for tokens in tokenized.values())
    tokenized = {t: tokens.with_windows(windows) for t, tokens in tokenized.items()}
    tables: dict[str, dict[str, torch.Tensor]] = {}  # by text: the vectors of its embeddings for each encoder
    for t, tokens in tokenized.items():
        if tokens.has_embeddings:
            tables[t] = tokens.vector_tables([(e.name, text_model_width(encoders[e.name])) for e in spec.text_encoders])
    for encoder in spec.text_encoders:
        tokens = tokenized[texts[encoder.name]]
        skip = clip_skip if clip_skip is not None else (2 if encoder.layer == "penultimate" else 1)
        pad_id = EOS_ID if encoder.pad_token == "end" else 0
        context, vector = encode_prompt(tokens.padded_with(pad_id), encoders[encoder.name], clip_skip=skip,
                                        final_norm=encoder.final_norm, pad_id=pad_id,
                                        vectors=tables.get(texts[encoder.name], {}).get(encoder.name))
        contexts.append(context)
        first_pooled = vector if first_pooled is None else first_pooled
        if encoder.pooled:
            pooled = vector
    return torch.cat(contexts, dim=-1), pooled if pooled is not None else first_pooled

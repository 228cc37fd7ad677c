"""Derive the CLIP tokenizer's vocabulary and merges from OpenAI's BPE file, once.

This is a maintenance script, not something the package runs. Its outputs,
``vocab.json.gz`` and ``merges.txt.gz`` next to it, are committed and shipped as
package data; ``nodes/sd/tokenizer.py`` loads them with no network access.

Source: ``bpe_simple_vocab_16e6.txt.gz`` from OpenAI's CLIP repository, as carried
inside the open-clip-torch wheel on PyPI (open-clip-torch is *not* a dependency)::

    .venv/bin/pip download --no-deps -d /tmp/oc open-clip-torch
    .venv/bin/python nodes/sd/data/make_vocab.py /tmp/oc/open_clip_torch-*.whl

(a path to the ``.txt.gz`` itself works too). Derived with open_clip_torch 3.3.0,
whose bpe file has SHA-256 924691ac288e54409236115652ad4aa250f48203de50a9e4722a6ecd48d6804a.

Construction, exactly as CLIP's ``SimpleTokenizer`` builds it:

* merges = lines ``1 .. 49152-256-2`` of the bpe file (line 0 is a ``#version`` header),
  i.e. 48894 merges, each "left right";
* vocab = the 256 ``bytes_to_unicode()`` characters, then each of them + ``</w>``,
  then the concatenation of every merge in order, then ``<|startoftext|>`` (49406) and
  ``<|endoftext|>`` (49407): 49408 entries.

Outputs are written as deterministic gzip (no timestamp or file name in the header), so
re-running the script on the same source gives byte-identical files.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BPE_MEMBER = "open_clip/bpe_simple_vocab_16e6.txt.gz"
N_MERGES = 49152 - 256 - 2  # 48894
VOCAB_SIZE = 49408


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode character table (256 entries)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def read_bpe_gz(source: Path) -> bytes:
    """Return the raw (still gzipped) bpe file from a wheel or a .txt.gz path."""
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as zf:
            return zf.read(BPE_MEMBER)
    return source.read_bytes()


def build(bpe_text: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    lines = bpe_text.split("\n")
    merges = [tuple(line.split()) for line in lines[1 : N_MERGES + 1]]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError("unexpected bpe file layout")
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise ValueError(f"vocabulary has {len(vocab)} entries, expected {VOCAB_SIZE}")
    return vocab, merges


def write_gz(path: Path, text: str) -> None:
    buf = io.BytesIO()
    # filename="" and mtime=0 keep the output byte-for-byte reproducible.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    path.write_bytes(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", type=Path, help="open-clip-torch wheel or bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--out", type=Path, default=HERE, help="output folder (default: next to this script)")
    args = ap.parse_args(argv)

    raw = read_bpe_gz(args.source)
    print(f"source bpe sha256: {hashlib.sha256(raw).hexdigest()}")
    vocab, merges = build(gzip.decompress(raw).decode("utf-8"))

    # Compact JSON, insertion order = id order.
    write_gz(args.out / "vocab.json.gz", json.dumps(vocab, ensure_ascii=False, separators=(",", ":")))
    # Same layout as Hugging Face's merges.txt: a version header, then one "left right" per line.
    write_gz(args.out / "merges.txt.gz", "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    for name in ("vocab.json.gz", "merges.txt.gz"):
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

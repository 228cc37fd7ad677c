"""Content signatures: equal signature, equal outputs.

A node's signature hashes its type, version, canonical literal inputs, the signatures and output
names of what its links take, and the node type's fingerprint (what identifies a loader's file).
A node that is not cacheable gets a signature unique to the run, and so does everything downstream.
An output declared to depend on some inputs only (`Output(depends_on=...)`) hands what reads it a
signature of those inputs alone.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from latentgraph.engine.graph import GraphNode


_encoder = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


def _canonical(payload: Any) -> bytes:
    return _encoder.encode(payload).encode()


def signature_of(node: GraphNode, upstream: dict[str, str], services: Any, run_nonce: str) -> tuple[str, bool]:
    """The signature of `node`, given the signatures of what its links take (`output_key(node,
    output)` -> signature, see `output_signatures`), and whether it is unique to this run (the node
    is not cacheable, or its fingerprint could not be taken)."""
    info = node.info
    links = sorted((name, upstream[output_key(ln.node, ln.output)], ln.output) for name, ln in node.links.items())
    volatile = not info.cacheable
    if info.cacheable:
        try:
            fingerprint = info.cls.fingerprint(node.literals, services)
        except Exception:  # the node will fail when it runs, with its own clear error
            fingerprint, volatile = ("unfingerprintable", run_nonce), True
    else:
        fingerprint = ("uncacheable", run_nonce)
    payload = (info.type, info.version, node.literals, links, fingerprint)
    signature = _digest(payload)
    for output in info.outputs.values():
        if output.depends_on is None:
            upstream[output_key(node.id, output.name)] = signature
        else:  # hashed from the inputs it depends on only (the fingerprint stays: it names the node's files)
            literals = {k: v for k, v in node.literals.items() if k in output.depends_on}
            own_links = [link for link in links if link[0] in output.depends_on]
            upstream[output_key(node.id, output.name)] = _digest(
                (info.type, info.version, literals, own_links, fingerprint, "output", output.name))
    return signature, volatile


def output_key(node_id: str, output: str) -> str:
    """Where `signature_of` keeps the signature of what reads `output` of `node_id`."""
    return f"{node_id}\x00{output}"


def _digest(payload: Any) -> str:
    return hashlib.blake2b(_canonical(payload), digest_size=16).hexdigest()

"""Content signatures: equal signature, equal outputs.

A node's signature hashes its type, version, canonical literal inputs, the signatures and output
names of what its links take, and the node type's fingerprint (what identifies a loader's file).
A node that is not cacheable gets a signature unique to the run, and so does everything downstream.
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
    """The signature of `node`, given the signatures of the nodes it links from, and whether it is
    unique to this run (the node is not cacheable, or its fingerprint could not be taken)."""
    info = node.info
    links = sorted((name, upstream[ln.node], ln.output) for name, ln in node.links.items())
    volatile = not info.cacheable
    if info.cacheable:
        try:
            fingerprint = info.cls.fingerprint(node.literals, services)
        except Exception:  # the node will fail when it runs, with its own clear error
            fingerprint, volatile = ("unfingerprintable", run_nonce), True
    else:
        fingerprint = ("uncacheable", run_nonce)
    payload = (info.type, info.version, node.literals, links, fingerprint)
    return hashlib.blake2b(_canonical(payload), digest_size=16).hexdigest(), volatile

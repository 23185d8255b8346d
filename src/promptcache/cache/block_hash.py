"""Chain hashes of full KV blocks: the identity of a cached prefix.

    seed      = sha256("promptcache-kv/1" | KV identity | tenant salt)
    hash(b_0) = sha256(seed      | tokens of block 0)
    hash(b_i) = sha256(hash(b_i-1) | tokens of block i)

Each hash names a block *and everything before it*, so one lookup per block finds the
longest cached prefix. SHA-256 over a fixed little-endian encoding is stable across
processes and machines (never Python's salted `hash()`), so routers and other workers
compute the same values. The tenant salt in the seed keeps tenants' chains disjoint.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Sequence
from typing import NewType

BlockHash = NewType("BlockHash", bytes)

_DOMAIN = b"promptcache-kv/1"


def seed_hash(kv_identity: str, salt: str | None) -> BlockHash:
    """The parent of a chain's first block, for one KV identity and one tenant.

    `kv_identity` names what the KV bytes mean (weights, config, tokenizer, KV dtype,
    block size, layout): equal identities compute equal KV for equal tokens.
    """
    h = hashlib.sha256(_DOMAIN)
    for part in (kv_identity, salt or ""):
        data = part.encode()
        h.update(len(data).to_bytes(4, "little") + data)
    return BlockHash(h.digest())


def hash_block(parent: BlockHash, token_ids: Sequence[int]) -> BlockHash:
    """Hash of one full block given its parent's hash."""
    tokens = array("I", token_ids)  # uint32
    if tokens.itemsize != 4:
        raise RuntimeError("uint32 array items must be 4 bytes")
    data = tokens.tobytes() if _LITTLE else _swapped(tokens)
    return BlockHash(hashlib.sha256(parent + data).digest())


def chain_hashes(parent: BlockHash, token_ids: Sequence[int], block_size: int) -> list[BlockHash]:
    """Hashes of the full blocks of `token_ids`, chained from `parent` (the seed, or the
    hash of the block just before `token_ids[0]`)."""
    out: list[BlockHash] = []
    for i in range(len(token_ids) // block_size):
        parent = hash_block(parent, token_ids[i * block_size : (i + 1) * block_size])
        out.append(parent)
    return out


def _swapped(tokens: array) -> bytes:
    swapped = array("I", tokens)
    swapped.byteswap()
    return swapped.tobytes()


_LITTLE = array("I", [1]).tobytes()[0] == 1

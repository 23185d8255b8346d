"""The disk tier's file format: one file per KV block, self-describing and checksummed.

    offset 0   magic       8 bytes  b"PCKVBLK\\0"
    offset 8   version     uint32 little-endian (FORMAT_VERSION)
    offset 12  header_len  uint32 little-endian
    offset 16  header      JSON, UTF-8: kv_identity, model fingerprint, layout (dtype, block
                           size, layers, KV heads, head dim), parent and chain hash, the
                           block's token ids, payload length, payload checksum
    then       payload     the block's K and V: (layers, 2, kv_heads, block_size, head_dim)
                           in the KV dtype, C order

The checksum is XXH3-128 of the payload (the `xxhash` package: tens of GB/s, so verifying
a read costs little beside the read itself). A file is written under a temporary name and
renamed into place, so its real name never shows a half-written file after a process
crash; a crash leaves at most a `.tmp` file, deleted at the next start. A power loss can
also leave a renamed file whose bytes never reached the disk (empty, short or zeros: the
`disk_fsync` policy, sync.py, bounds which): the header's length check at start and the
checksum on every read catch it. A file whose magic, version, identity, layout, length or
checksum is wrong is refused with `BadFile` and never loaded.

One block (16 tokens by default) per file: the pool evicts and the host tier holds single
blocks, so a file is the unit every tier moves. Files sit in 256 subfolders named by the
hash's first byte.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import xxhash

from promptcache.cache.block_hash import BlockHash

MAGIC = b"PCKVBLK\0"
FORMAT_VERSION = 1
SUFFIX = ".kv"
TMP_SUFFIX = ".tmp"
_PREFIX = struct.Struct("<8sII")
MAX_HEADER_BYTES = 1 << 20


class BadFile(Exception):
    """A file that must not be loaded; `foreign` when it is another model's or layout's."""

    def __init__(self, message: str, foreign: bool = False) -> None:
        super().__init__(message)
        self.foreign = foreign


@dataclass(frozen=True, slots=True)
class Layout:
    """What a payload's bytes are: a block of every layer's K and V."""

    dtype: str
    block_size: int
    num_layers: int
    num_kv_heads: int
    head_dim: int

    @property
    def shape(self) -> tuple[int, int, int, int, int]:
        return (self.num_layers, 2, self.num_kv_heads, self.block_size, self.head_dim)

    @property
    def torch_dtype(self) -> torch.dtype:
        dtype = getattr(torch, self.dtype)
        assert isinstance(dtype, torch.dtype), f"not a torch dtype: {self.dtype}"
        return dtype


@dataclass(frozen=True, slots=True)
class Identity:
    """Whose KV a file holds: checked on every file before it is used."""

    kv_identity: str  # seeds the chain hashes (model content, dtype, block size, layout)
    model: str  # the model's content fingerprint
    layout: Layout


@dataclass(frozen=True, slots=True)
class Header:
    block_hash: BlockHash
    parent: BlockHash
    token_ids: list[int]
    payload_bytes: int
    checksum: str


def checksum(payload: memoryview | bytes) -> str:
    return "xxh3_128:" + xxhash.xxh3_128_hexdigest(payload)


def path_for(folder: Path, h: BlockHash) -> Path:
    name = h.hex()
    return folder / name[:2] / (name + SUFFIX)


def payload_view(block: torch.Tensor) -> memoryview:
    """The bytes of a (CPU, contiguous) block tensor, without a copy."""
    array: Any = block.contiguous().view(torch.uint8).numpy()
    return memoryview(array).cast("B")


def write_file(
    path: Path, identity: Identity, header: Header, payload: memoryview, sync: bool = False
) -> int:
    """Write `path` atomically (temporary file, then rename); returns its size. `sync`:
    fsync the file's bytes before the rename (its folder's entry is the caller's)."""
    body = json.dumps(
        {
            "kv_identity": identity.kv_identity,
            "model": identity.model,
            "layout": asdict(identity.layout),
            "hash": header.block_hash.hex(),
            "parent": header.parent.hex(),
            "tokens": header.token_ids,
            "payload_bytes": header.payload_bytes,
            "checksum": header.checksum,
        }
    ).encode()
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(TMP_SUFFIX)
    try:
        with open(tmp, "wb") as f:
            f.write(_PREFIX.pack(MAGIC, FORMAT_VERSION, len(body)))
            f.write(body)
            f.write(payload)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return _PREFIX.size + len(body) + len(payload)


def read_header(f: Any, identity: Identity, size: int) -> Header:
    """Parse and check the header at the start of open file `f` of `size` bytes."""
    prefix = f.read(_PREFIX.size)
    if len(prefix) < _PREFIX.size:
        raise BadFile("truncated before the header")
    magic, version, length = _PREFIX.unpack(prefix)
    if magic != MAGIC or version != FORMAT_VERSION or length > MAX_HEADER_BYTES:
        raise BadFile(f"not a version-{FORMAT_VERSION} KV block file")
    try:
        meta = json.loads(f.read(length))
        header = Header(
            BlockHash(bytes.fromhex(meta["hash"])),
            BlockHash(bytes.fromhex(meta["parent"])),
            [int(t) for t in meta["tokens"]],
            int(meta["payload_bytes"]),
            str(meta["checksum"]),
        )
        layout = Layout(**meta["layout"])
    except (ValueError, KeyError, TypeError) as exc:
        raise BadFile(f"unreadable header: {exc}") from exc
    if meta["kv_identity"] != identity.kv_identity or meta["model"] != identity.model:
        raise BadFile("another model's KV", foreign=True)
    if layout != identity.layout:
        raise BadFile("another KV layout", foreign=True)
    if size != _PREFIX.size + length + header.payload_bytes:
        raise BadFile(f"{size} bytes, the header promises {_PREFIX.size + length} + payload")
    return header


def read_block(path: Path, identity: Identity, expect: BlockHash) -> tuple[torch.Tensor, int]:
    """The verified block stored at `path` (raises `BadFile`, or `OSError` if unreadable)
    and the bytes read."""
    layout = identity.layout
    block = torch.empty(layout.shape, dtype=layout.torch_dtype)
    view = payload_view(block)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        header = read_header(f, identity, size)
        if header.block_hash != expect:
            raise BadFile("the file holds another block")
        if header.payload_bytes != len(view):
            raise BadFile("payload size does not match the layout")
        if f.readinto(view) != len(view):
            raise BadFile("truncated payload")
    if checksum(view) != header.checksum:
        raise BadFile("checksum mismatch")
    return block, size

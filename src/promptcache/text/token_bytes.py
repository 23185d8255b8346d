"""The bytes and the display text of single tokens, for logprobs.

OpenAI reports each token of a logprob as `token` (its text) and `bytes` (its UTF-8 bytes,
which may be part of a multi-byte character). A token's bytes come from its vocabulary
string: byte-level BPE vocabularies (GPT-2, Llama 3, SmolLM2) spell each byte as one
printable character (GPT-2's `bytes_to_unicode` table, inverted here); SentencePiece
vocabularies spell a space as `▁` and a raw byte as `<0xHH>`. A token whose bytes are not
whole UTF-8 is shown as its bytes escaped (`\\xe2`), as OpenAI does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from typing import Any

BYTE_TOKEN = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
SPACE_PIECE = "\u2581"


@cache
def _unicode_to_byte() -> dict[str, int]:
    """The inverse of GPT-2's `bytes_to_unicode`: printable stand-in character → byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def _decoder_kind(tokenizer: Any) -> str:
    """'byte_level', 'sentencepiece' or 'plain', from the fast tokenizer's decoder."""
    backend = getattr(tokenizer, "_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return "plain"
    spec = json.dumps(json.loads(decoder.__getstate__()))
    if "ByteLevel" in spec:
        return "byte_level"
    if "ByteFallback" in spec or SPACE_PIECE in spec:
        return "sentencepiece"
    return "plain"


def token_text(raw: bytes) -> str:
    """A token's display text: its UTF-8 text, or its bytes escaped where it is not whole."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "".join(chr(b) if b < 0x80 else f"\\x{b:02x}" for b in raw)


@dataclass(slots=True)
class TokenBytes:
    """Bytes and text of token ids, remembered per id."""

    tokenizer: Any
    _kind: str = ""
    _bytes: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._kind = _decoder_kind(self.tokenizer)

    def bytes_of(self, token_id: int) -> bytes:
        got = self._bytes.get(token_id)
        if got is None:
            got = self._bytes[token_id] = self._compute(token_id)
        return got

    def text_of(self, token_id: int) -> str:
        return token_text(self.bytes_of(token_id))

    def _compute(self, token_id: int) -> bytes:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if self._kind == "byte_level" and isinstance(piece, str):
            table = _unicode_to_byte()
            if all(ch in table for ch in piece):
                return bytes(table[ch] for ch in piece)
        if self._kind == "sentencepiece" and isinstance(piece, str):
            byte = BYTE_TOKEN.match(piece)
            if byte:
                return bytes([int(byte.group(1), 16)])
            return piece.replace(SPACE_PIECE, " ").encode("utf-8")
        text = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return str(text).encode("utf-8")

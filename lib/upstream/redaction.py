"""Keeping the server's Hugging Face token out of everything the upstream says to a caller.

An upstream may echo the token it was sent (a misconfigured `HF_BASE_URL` pointing at an
echo server, a provider's error message quoting the credential), whole or cut. Every
upstream text that can reach a caller passes through `Redactor` first, before any cut,
so a prefix of the token never survives as the tail of a shortened message.
"""

from __future__ import annotations

import re

# Any run of this many characters of a secret counts as leaking it.
PIECE = 12
# Aligned blocks of half a piece: every PIECE-long run of a secret contains one whole,
# so finding the blocks finds every piece, with a few fast `find` calls per text.
_BLOCK = PIECE // 2
REDACTED = "[redacted]"
_REDACTED_BYTES = REDACTED.encode()
# The longest upstream reason passed on to a caller.
MAX_REASON_CHARS = 300
# Hugging Face tokens in general: an upstream message may quote another credential.
_HF_TOKEN_SHAPE = re.compile(r"\bhf_[A-Za-z0-9]{8,}")


class Redactor:
    """Replaces every piece of `secret` (PIECE characters or more) in a text or a body."""

    def __init__(self, secret: str | None) -> None:
        self._secret = secret or ""
        self._secret_bytes = self._secret.encode()
        self._blocks = [
            (offset, self._secret[offset : offset + _BLOCK])
            for offset in range(0, max(len(self._secret) - _BLOCK + 1, 0), _BLOCK)
        ]
        self._byte_blocks = [(offset, block.encode()) for offset, block in self._blocks]

    def redact(self, text: str) -> str:
        """`text` without the secret's pieces or anything shaped like a Hugging Face token."""
        if self._blocks:
            text = _replace(text, self._secret, self._blocks, REDACTED)
        return _HF_TOKEN_SHAPE.sub(REDACTED, text)

    def reason(self, text: str) -> str:
        """An upstream's reason for a caller: redacted whole first, then cut to length."""
        text = self.redact(text)
        if len(text) <= MAX_REASON_CHARS:
            return text
        return text[: MAX_REASON_CHARS - 3] + "..."

    def redact_bytes(self, data: bytes) -> bytes:
        """`data` (an upstream body, relayed as is) without the secret's pieces."""
        if not self._byte_blocks:
            return data
        return _replace(data, self._secret_bytes, self._byte_blocks, _REDACTED_BYTES)


def _replace[T: (str, bytes)](text: T, secret: T, blocks: list[tuple[int, T]], mark: T) -> T:
    spans: list[tuple[int, int]] = []
    for offset, block in blocks:
        at = text.find(block)
        while at != -1:
            start, end = _extent(text, at, secret, offset)
            if end - start >= PIECE:
                spans.append((start, end))
            at = text.find(block, at + 1)
    if not spans:
        return text
    spans.sort()
    parts: list[T] = []
    cursor = 0
    for start, end in spans:
        if end <= cursor:
            continue
        parts += [text[cursor : max(start, cursor)], mark]
        cursor = end
    parts.append(text[cursor:])
    return mark[:0].join(parts)


def _extent[T: (str, bytes)](text: T, at: int, secret: T, offset: int) -> tuple[int, int]:
    """The span of `text` around `at` that matches `secret` around `offset`."""
    start, left = at, offset
    while start > 0 and left > 0 and text[start - 1] == secret[left - 1]:
        start, left = start - 1, left - 1
    end, right = at + _BLOCK, offset + _BLOCK
    while end < len(text) and right < len(secret) and text[end] == secret[right]:
        end, right = end + 1, right + 1
    return start, end

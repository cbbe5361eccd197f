"""The stand-in's embeddings: hf-inference feature extraction, and OpenAI's list shape."""

from __future__ import annotations

import base64
import struct
from typing import Any

from lib.standin.tasks import EMBEDDING_DIMENSIONS, text_vector


def feature_vectors(inputs: Any) -> Any | None:
    """hf-inference feature extraction (sentence-transformers): one vector per input, a bare
    vector for a lone string (platform notes, "Feature extraction"); None for other inputs."""
    if isinstance(inputs, str):
        return text_vector(inputs)
    if isinstance(inputs, list) and all(isinstance(x, str) for x in inputs):
        return [text_vector(text) for text in inputs]
    return None


def openai_embeddings(model: Any, texts: list[str], body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's embeddings list, as vLLM and Ollama answer it; `dimensions` shortens vectors."""
    width = body.get("dimensions") or EMBEDDING_DIMENSIONS
    vectors = [text_vector(text)[:width] for text in texts]
    if body.get("encoding_format") == "base64":
        encoded: list[Any] = [
            base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() for v in vectors
        ]
    else:
        encoded = vectors
    tokens = sum(len(text.split()) for text in texts)
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": vector}
            for i, vector in enumerate(encoded)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }

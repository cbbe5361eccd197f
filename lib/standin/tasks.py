"""What the stand-in upstream answers for each hf-inference task that takes and gives JSON.

Shapes: huggingface.js `packages/tasks/src/tasks/<task>/spec/output.json`, as huggingface_hub
parses them (`inference/_generated/types/`). Answers are deterministic, built from the
inputs, so tests can check what went through. Tasks that take or give raw bytes (images,
audio) are not answered. Never imported by the production app.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from typing import Any

EMBEDDING_DIMENSIONS = 384

# The task a model's default route serves, guessed from words in its name; first match wins.
_TASK_BY_NAME = (
    (("mnli", "zero-shot"), "zero-shot-classification"),
    (("sentiment", "sst", "classif"), "text-classification"),
    (("summar", "bart"), "summarization"),
    (("ner", "token"), "token-classification"),
    (("squad", "-qa"), "question-answering"),
    (("tapas",), "table-question-answering"),
    (("opus-mt", "translat", "t5"), "translation"),
    (("roberta-base", "bert-base", "mask"), "fill-mask"),
    (("sentence-transformers", "minilm"), "sentence-similarity"),
)


def text_vector(text: str) -> list[float]:
    """A deterministic unit vector for `text`, 384 wide like all-MiniLM-L6-v2."""
    seed = hashlib.sha256(text.encode()).digest()
    raw = [(seed[i % 32] - 127.5) / 127.5 + i / 1000 for i in range(EMBEDDING_DIMENSIONS)]
    norm = math.sqrt(sum(x * x for x in raw))
    return [round(x / norm, 6) for x in raw]


def guess_task(model: str) -> str:
    """The task hf-inference would run for `model` on its default route."""
    name = model.lower()
    for words, task in _TASK_BY_NAME:
        if any(word in name for word in words):
            return task
    return "text-generation"


def task_answer(task: str, inputs: Any, parameters: dict[str, Any]) -> Any | None:
    """The task's answer to `inputs`, or None when they are not what the task takes (422)."""
    answer = _ANSWERS.get(task)
    try:
        return answer(inputs, parameters) if answer else None
    except (TypeError, KeyError, AttributeError, ValueError):
        return None


def _text_classification(inputs: str, parameters: dict[str, Any]) -> Any:
    positive = 0.9 if "love" in inputs.lower() or "good" in inputs.lower() else 0.2
    labels = [
        {"label": "POSITIVE", "score": positive},
        {"label": "NEGATIVE", "score": round(1 - positive, 6)},
    ]
    labels.sort(key=lambda item: -item["score"])
    return [labels[: parameters.get("top_k") or 2]]


def _summarization(inputs: str, _: dict[str, Any]) -> Any:
    return [{"summary_text": " ".join(_words(inputs)[:8])}]


def _translation(inputs: str, parameters: dict[str, Any]) -> Any:
    target = parameters.get("tgt_lang") or "fr"
    return [{"translation_text": f"[{target}] {' '.join(_words(inputs)[:20])}"}]


def _token_classification(inputs: str, _: dict[str, Any]) -> Any:
    word = _words(inputs)[0]
    return [{"entity_group": "PER", "score": 0.99, "word": word, "start": 0, "end": len(word)}]


def _fill_mask(inputs: str, parameters: dict[str, Any]) -> Any:
    mask = "[MASK]" if "[MASK]" in inputs else "<mask>"
    if mask not in inputs:
        raise ValueError("no mask token")
    words = ["proxy", "gateway", "relay", "bridge", "door"][: parameters.get("top_k") or 5]
    return [
        {
            "score": round(0.5 / (rank + 1), 6),
            "token": 1000 + rank,
            "token_str": word,
            "sequence": inputs.replace(mask, word, 1),
        }
        for rank, word in enumerate(words)
    ]


def _zero_shot(inputs: str, parameters: dict[str, Any]) -> Any:
    labels = parameters["candidate_labels"]
    if not isinstance(inputs, str) or not labels:
        raise ValueError("text and labels needed")
    weights = [1.0 + (label.lower() in inputs.lower()) * 9 for label in labels]
    total = sum(weights)
    ranked = sorted(zip(labels, weights, strict=True), key=lambda pair: -pair[1])
    return [{"label": label, "score": round(weight / total, 6)} for label, weight in ranked]


def _question_answering(inputs: dict[str, Any], _: dict[str, Any]) -> Any:
    context, question = inputs["context"], inputs["question"]
    if not isinstance(context, str) or not isinstance(question, str) or not context:
        raise ValueError("question and context needed")
    answer = _words(context)[-1]
    start = context.rindex(answer)
    return {"answer": answer, "score": 0.87, "start": start, "end": start + len(answer)}


def _sentence_similarity(inputs: dict[str, Any], _: dict[str, Any]) -> Any:
    source = text_vector(inputs["source_sentence"])
    return [
        round(sum(a * b for a, b in zip(source, text_vector(other), strict=True)), 6)
        for other in inputs["sentences"]
    ]


def _table_question_answering(inputs: dict[str, Any], _: dict[str, Any]) -> Any:
    table, query = inputs["table"], inputs["query"]
    column = next(iter(table))
    cells = [str(cell) for cell in table[column]]
    if not isinstance(query, str) or not cells:
        raise ValueError("a query and a table needed")
    return {"answer": cells[0], "coordinates": [[0, 0]], "cells": cells[:1], "aggregator": "NONE"}


def _text_generation(inputs: str, _: dict[str, Any]) -> Any:
    said = " ".join(inputs.split()[:20])
    return [{"generated_text": f"Hello from the stand-in upstream! You said: {said}"}]


def _words(text: str) -> list[str]:
    words = text.split()
    if not words:
        raise ValueError("empty text")
    return words


def _needs_text(answer: Callable[[str, dict[str, Any]], Any]) -> Callable[..., Any]:
    def checked(inputs: Any, parameters: dict[str, Any]) -> Any:
        if not isinstance(inputs, str):
            raise TypeError("a text is needed")
        return answer(inputs, parameters)

    return checked


_ANSWERS: dict[str, Callable[[Any, dict[str, Any]], Any]] = {
    "text-classification": _needs_text(_text_classification),
    "summarization": _needs_text(_summarization),
    "translation": _needs_text(_translation),
    "token-classification": _needs_text(_token_classification),
    "fill-mask": _needs_text(_fill_mask),
    "zero-shot-classification": _zero_shot,
    "question-answering": _question_answering,
    "sentence-similarity": _sentence_similarity,
    "table-question-answering": _table_question_answering,
    "text-generation": _needs_text(_text_generation),
}

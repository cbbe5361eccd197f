"""Hub model ids and the allowlist."""

from __future__ import annotations

import pytest

from lib.model_ids import is_model_allowed, is_valid_model_id


@pytest.mark.parametrize(
    "model",
    [
        "gpt2",
        "HuggingFaceTB/SmolLM3-3B",
        "Qwen/Qwen2.5-7B-Instruct:groq",
        "org/m:fastest",
        "a_b/c.d-e",
        "x" * 96,
    ],
)
def test_valid_model_ids(model: str) -> None:
    assert is_valid_model_id(model)


@pytest.mark.parametrize(
    "model",
    [
        "",
        "/x",
        "x/",
        "a/b/c",
        "../x",
        "a/..",
        "a..b/c",
        "a--b/c",
        "org/model.git",
        "-org/x",
        "org/x-",
        "x" * 97,
        "org/x:GROQ",
        "org/x:",
        "org/x:a:b",
        "org/x?y",
        "org/x#y",
        "org x/y",
        "https://evil.example/x",
        "org/x\n",
    ],
)
def test_invalid_model_ids(model: str) -> None:
    assert not is_valid_model_id(model)


def test_allowlist_entry_without_suffix_allows_any_provider() -> None:
    allowed = ["Qwen/Qwen2.5-7B-Instruct"]
    assert is_model_allowed("Qwen/Qwen2.5-7B-Instruct", allowed)
    assert is_model_allowed("qwen/qwen2.5-7b-instruct:groq", allowed)
    assert not is_model_allowed("Qwen/Qwen2.5-72B-Instruct", allowed)


def test_allowlist_entry_with_suffix_allows_only_that_provider() -> None:
    allowed = ["Qwen/Qwen2.5-7B-Instruct:groq"]
    assert is_model_allowed("Qwen/Qwen2.5-7B-Instruct:groq", allowed)
    assert not is_model_allowed("Qwen/Qwen2.5-7B-Instruct", allowed)
    assert not is_model_allowed("Qwen/Qwen2.5-7B-Instruct:together", allowed)


def test_star_allows_everything() -> None:
    assert is_model_allowed("any/model:cheapest", ["*"])

"""The official clients, unmodified, over real sockets: every JSON task huggingface_hub offers
through `/models/...`, bulk embeddings, `models.retrieve`, large images, and the routes that
point elsewhere."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lib.standin import StandinState, text_vector
from tests.conftest import CANARY_KEY, CANARY_TOKEN
from tests.servers import serve_proxy_and_standin

CHAT_MODEL = "HuggingFaceTB/SmolLM3-3B"
EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
MODELS = {
    "summarization": "facebook/bart-large-cnn",
    "translation": "Helsinki-NLP/opus-mt-en-fr",
    "token-classification": "dslim/bert-base-NER",
    "fill-mask": "google-bert/bert-base-uncased",
    "zero-shot-classification": "facebook/bart-large-mnli",
    "question-answering": "deepset/roberta-base-squad2",
    "table-question-answering": "google/tapas-base-finetuned-wtq",
    "text-generation": "openai-community/gpt2",
}
TEXTS = [f"sentence number {i}" for i in range(1000)]


@dataclass
class Live:
    """The proxy and the stand-in, both serving on loopback."""

    url: str
    standin: StandinState

    def sent(self) -> dict:
        return self.standin.received[-1]


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    state = StandinState(token=CANARY_TOKEN)
    allowed = ",".join([CHAT_MODEL, EMBEDDER, *MODELS.values()])
    with serve_proxy_and_standin(state, allowed_models=allowed) as url:
        yield Live(url, state)


def hf(live: Live, path: str):
    from huggingface_hub import InferenceClient

    return InferenceClient(model=f"{live.url}/models/{path}", api_key=CANARY_KEY)


def openai_client(live: Live):
    from openai import OpenAI

    return OpenAI(base_url=f"{live.url}/v1", api_key=CANARY_KEY, max_retries=0)


def test_summarization(live: Live) -> None:
    model = MODELS["summarization"]
    result = hf(live, model).summarization("one two three four five six seven eight nine ten")
    assert result.summary_text == "one two three four five six seven eight"
    assert live.sent()["path"] == f"/hf-inference/models/{model}"


def test_translation(live: Live) -> None:
    result = hf(live, MODELS["translation"]).translation(
        "Hello world", src_lang="en", tgt_lang="fr"
    )
    assert result.translation_text == "[fr] Hello world"
    assert live.sent()["json"]["parameters"]["tgt_lang"] == "fr"


def test_token_classification(live: Live) -> None:
    entities = hf(live, MODELS["token-classification"]).token_classification("Ada wrote code")
    assert [(e.entity_group, e.word, e.start, e.end) for e in entities] == [("PER", "Ada", 0, 3)]


def test_fill_mask(live: Live) -> None:
    fills = hf(live, MODELS["fill-mask"]).fill_mask("A [MASK] holds the token.", top_k=2)
    assert [f.sequence for f in fills] == ["A proxy holds the token.", "A gateway holds the token."]
    assert live.sent()["json"]["parameters"]["top_k"] == 2


def test_zero_shot_classification(live: Live) -> None:
    labels = hf(live, MODELS["zero-shot-classification"]).zero_shot_classification(
        "The invoice is overdue", candidate_labels=["sports", "invoice"]
    )
    assert [item.label for item in labels] == ["invoice", "sports"]
    assert live.sent()["json"]["parameters"]["candidate_labels"] == ["sports", "invoice"]


def test_question_answering(live: Live) -> None:
    answer = hf(live, MODELS["question-answering"]).question_answering(
        question="Who holds the token?", context="The token is held by promptgate"
    )
    assert (answer.answer, answer.start, answer.end) == ("promptgate", 21, 31)
    assert live.sent()["json"]["inputs"]["question"] == "Who holds the token?"


def test_table_question_answering(live: Live) -> None:
    table = {"Repository": ["promptgate", "other"], "Stars": ["5", "1"]}
    answer = hf(live, MODELS["table-question-answering"]).table_question_answering(
        table, query="Which repository?"
    )
    assert answer.answer == "promptgate" and answer.cells == ["promptgate"]


def test_text_generation(live: Live) -> None:
    text = hf(live, MODELS["text-generation"]).text_generation("Once upon", max_new_tokens=5)
    assert text.endswith("You said: Once upon")


def test_sentence_similarity_through_its_pipeline_route(live: Live) -> None:
    client = hf(live, f"{EMBEDDER}/pipeline/sentence-similarity")
    scores = client.sentence_similarity("a cat", other_sentences=["a cat", "a dog"])
    assert scores[0] == pytest.approx(1.0, abs=1e-4) and scores[1] < 0.999
    assert live.sent()["path"] == f"/hf-inference/models/{EMBEDDER}/pipeline/sentence-similarity"


def test_a_model_s_other_pipeline_by_name(live: Live) -> None:
    """Any hf-inference task by its pipeline path: here a classifier's zero-shot pipeline."""
    model = MODELS["zero-shot-classification"]
    client = hf(live, f"{model}/pipeline/zero-shot-classification")
    labels = client.zero_shot_classification("a red car", candidate_labels=["car", "tree"])
    assert labels[0].label == "car"


def test_an_unknown_pipeline_is_a_clear_404(live: Live) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError, match="no 'text2sql' pipeline") as caught:
        hf(live, f"{EMBEDDER}/pipeline/text2sql").feature_extraction("x")
    assert caught.value.response.status_code == 404


def test_huggingface_hub_feature_extraction_of_a_thousand_texts(live: Live) -> None:
    before = len(live.standin.received)
    vectors = hf(live, f"{EMBEDDER}/pipeline/feature-extraction").feature_extraction(TEXTS)
    assert vectors.shape == (1000, 384)
    assert vectors[417].tolist() == pytest.approx(text_vector(TEXTS[417]), abs=1e-6)
    assert len(live.standin.received) - before == 32


def test_openai_embeddings_of_a_thousand_texts_base64(live: Live) -> None:
    before = len(live.standin.received)
    result = openai_client(live).embeddings.create(model=EMBEDDER, input=TEXTS)
    assert [item.index for item in result.data] == list(range(1000))
    for i in (0, 31, 32, 999):
        assert result.data[i].embedding == pytest.approx(text_vector(TEXTS[i]), abs=1e-6)
    batches = live.standin.received[before:]
    assert len(batches) == 32 and all(len(b["json"]["inputs"]) <= 32 for b in batches)


def test_openai_models_retrieve(live: Live) -> None:
    import openai

    model = openai_client(live).models.retrieve(EMBEDDER)
    assert (model.id, model.owned_by) == (EMBEDDER, "sentence-transformers")
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        openai_client(live).models.retrieve("meta-llama/Llama-3.1-8B")


def test_openai_chat_with_an_800_kb_image(live: Live) -> None:
    image = base64.b64encode(bytes(range(256)) * 2400).decode()  # 614 KB, 819 KB as base64
    url = f"data:image/png;base64,{image}"
    assert len(url) > 800_000
    content = [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    reply = openai_client(live).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": content}], temperature=0
    )
    assert reply.choices[0].message.content.endswith("You said: What is this?")
    sent = live.sent()["json"]
    assert sent["messages"][0]["content"][1]["image_url"]["url"] == url
    assert sent["temperature"] == 0 and isinstance(sent["temperature"], int)


def test_openai_legacy_function_message(live: Live) -> None:
    messages = [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": None, "function_call": {"name": "w", "arguments": "{}"}},
        {"role": "function", "name": "w", "content": json.dumps({"sky": "blue"})},
    ]
    openai_client(live).chat.completions.create(model=CHAT_MODEL, messages=messages)
    assert live.sent()["json"]["messages"][2] == messages[2]


def test_openai_legacy_completions_point_to_chat(live: Live) -> None:
    import openai

    with pytest.raises(openai.NotFoundError, match="/v1/chat/completions") as caught:
        openai_client(live).completions.create(model=CHAT_MODEL, prompt="x")
    assert caught.value.code == "use_chat_completions"


def test_huggingface_hub_task_at_the_root_is_told_where_to_go(live: Live) -> None:
    from huggingface_hub import InferenceClient
    from huggingface_hub.errors import HfHubHTTPError

    client = InferenceClient(base_url=live.url, api_key=CANARY_KEY)
    with pytest.raises(HfHubHTTPError, match="/models/<org>/<name>") as caught:
        client.text_classification("I love it")
    assert caught.value.response.status_code == 404


def test_langchain_openai_embeddings_of_a_thousand_texts(live: Live) -> None:
    """The README's snippet: LangChain sends its batch of 1,000 texts in one request."""
    from langchain_openai import OpenAIEmbeddings

    before = len(live.standin.received)
    embeddings = OpenAIEmbeddings(
        model=EMBEDDER,
        base_url=f"{live.url}/v1",
        api_key=CANARY_KEY,
        check_embedding_ctx_length=False,
        max_retries=0,
    )
    vectors = embeddings.embed_documents(TEXTS)
    assert len(vectors) == 1000
    assert vectors[640] == pytest.approx(text_vector(TEXTS[640]), abs=1e-6)
    assert len(live.standin.received) - before == 32


def test_token_ids_as_langchain_sends_them_by_default_are_refused_with_the_fix(
    live: Live,
) -> None:
    """What `OpenAIEmbeddings()` sends without `check_embedding_ctx_length=False` (its
    tokenizer needs a download, so the ids are sent here through the openai SDK)."""
    import openai

    with pytest.raises(openai.UnprocessableEntityError) as caught:
        openai_client(live).embeddings.create(model=EMBEDDER, input=[[15339, 1917], [3]])
    assert caught.value.body["param"] == "input"
    assert "check_embedding_ctx_length=False" in caught.value.message

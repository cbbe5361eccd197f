"""A stand-in for Hugging Face's inference router, for offline development and tests.

It answers the routes promptgate calls with the shapes the real router answers, and
records what it received so tests can check what reached "the upstream":
    POST /v1/chat/completions                        hub-docs `tasks/chat-completion.md`
    POST /v1/responses                               lib/standin/responses.py
    POST /hf-inference/models/{m}/pipeline/feature-extraction   one vector per input
    POST /hf-inference/models/{m}/pipeline/{task}    that task (`lib/standin/tasks.py`)
    POST /hf-inference/models/{m}                    the model's task, guessed from its name
With `StandinState(api="openai")` it is an OpenAI-compatible model server instead (vLLM,
Ollama, TGI/TEI): the same chat routes, `POST /v1/embeddings` (OpenAI's list shape, floats or
base64) and no hf-inference routes. With `token=None` it takes requests without a token.
Errors are the ones listed in the platform notes ("Errors seen"). A model whose name
holds "missing" is unknown (404, text/plain, as hf-inference answers). Given tools, a
chat request (not streamed) gets a call of the first one; asked for JSON, JSON that fits
the schema (lib/standin/structured.py), so that clients' tool and structured loops end.

Faults: tests script them as `Fault`s in `StandinState.faults`, one per request, or in
`StandinState.model_faults`, every request for that model (a model that is down: 429, 503
loading, a hang, a cut before the first byte). To try them by hand, end the last user
message (or a task's `inputs` text) with a tag:
    #standin:401 #standin:402 #standin:404 #standin:422 #standin:429 #standin:500 #standin:503
    #standin:notjson   a 200 whose body is not JSON
    #standin:cut       a stream that stops before `data: [DONE]`
    #standin:cutFirst  a 200 whose connection breaks before its first byte
    #standin:midError  a stream that sends a TGI-style error event
    #standin:reset     a connection broken mid-body
    #standin:slow      waits `slow_s` seconds before answering
    #standin:drip      streams one event every 0.05 s (a caller can hang up mid-stream)
    #standin:flood     streams 64 KB events without end, until someone hangs up
Never imported by the production app: only `lib.devserver` and the tests may import
it, and it imports nothing else of promptgate.
"""

from lib.standin.app import create_standin_app
from lib.standin.state import STANDIN_TOKEN, Fault, StandinState, StreamEnd
from lib.standin.tasks import EMBEDDING_DIMENSIONS, text_vector

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "STANDIN_TOKEN",
    "Fault",
    "StandinState",
    "StreamEnd",
    "create_standin_app",
    "text_vector",
]

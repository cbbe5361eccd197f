"""A static upstream on loopback: nginx answering POSTs with fixed chat, embedding and SSE bodies.

It answers both the OpenAI paths (called directly and by the reference forwarder) and the
Hugging Face path the proxy calls for embeddings (feature-extraction), with the same vector.

nginx runs as a child process (not a daemon) from a config generated into a temp dir, with one
worker, so that it costs the proxy as little CPU as possible on a small machine.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM3-3B"
STREAM_WORDS = 20
EMBEDDING_DIMENSIONS = 384
STREAM_REQUEST_ID = "bench-stream"

CHAT_COMPLETION = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": MODEL,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello from the static bench upstream."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
}

EMBEDDING = {
    "object": "list",
    "model": "BAAI/bge-small-en-v1.5",
    "data": [
        {
            "object": "embedding",
            "index": 0,
            "embedding": [round((i % 97) / 97 - 0.5, 6) for i in range(EMBEDDING_DIMENSIONS)],
        }
    ],
    "usage": {"prompt_tokens": 5, "total_tokens": 5},
}


def _stream_body() -> str:
    events = []
    for i in range(STREAM_WORDS):
        chunk = {
            "id": "chatcmpl-bench",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": f"word{i} "}, "finish_reason": None}],
        }
        events.append("data: " + json.dumps(chunk, separators=(",", ":")) + "\n\n")
    last = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": MODEL,
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    events.append("data: " + json.dumps(last, separators=(",", ":")) + "\n\n")
    events.append("data: [DONE]\n\n")
    return "".join(events)


CHAT_BODY = json.dumps(CHAT_COMPLETION, separators=(",", ":"))
EMBEDDING_BODY = json.dumps(EMBEDDING, separators=(",", ":"))
# What Hugging Face's feature-extraction pipeline answers for one sentence: the bare vectors.
FEATURES_BODY = json.dumps([EMBEDDING["data"][0]["embedding"]], separators=(",", ":"))
STREAM_BODY = _stream_body()

_CONFIG = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port};
        location = /v1/chat/completions {{
            if ($http_x_request_id = "bench-stream") {{
                rewrite ^ /internal/stream last;
            }}
            default_type application/json;
            return 200 '{chat}';
        }}
        location = /internal/stream {{
            internal;
            add_header Cache-Control no-cache;
            default_type text/event-stream;
            return 200 '{stream}';
        }}
        location = /v1/embeddings {{
            default_type application/json;
            return 200 '{embedding}';
        }}
        location ~ ^/hf-inference/models/.+/pipeline/feature-extraction$ {{
            default_type application/json;
            return 200 '{features}';
        }}
        location / {{ return 404; }}
    }}
}}
"""


def nginx_path() -> str | None:
    """The nginx binary, or None when it is not installed (Debian puts it in /usr/sbin)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def free_port() -> int:
    """A loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout_s: float = 20.0) -> None:
    """Return once something accepts connections on `port`; raise if `process` died first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args[0]} exited with status {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout_s:g} s")


class NginxUpstream:
    """nginx serving the fixed bodies on a free loopback port, while the context is open.

    nginx cannot read JSON bodies, so a streamed chat request is one whose `X-Request-ID` is
    `STREAM_REQUEST_ID`: the proxy passes a caller's request id upstream, and so does the
    reference forwarder.
    """

    def __init__(self) -> None:
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The base URL, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> NginxUpstream:
        binary = nginx_path()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx-light)")
        self._dir = tempfile.TemporaryDirectory(prefix="promptgate-bench-nginx-")
        prefix = Path(self._dir.name)
        self.port = free_port()
        config = _CONFIG.format(
            prefix=prefix,
            port=self.port,
            chat=_quote(CHAT_BODY),
            embedding=_quote(EMBEDDING_BODY),
            features=_quote(FEATURES_BODY),
            stream=_quote(STREAM_BODY),
        )
        (prefix / "nginx.conf").write_text(config)
        self._process = subprocess.Popen(
            [binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port, self._process)
        except RuntimeError as exc:
            self.__exit__(None, None, None)
            raise RuntimeError(f"nginx did not start: {exc}") from None
        return self

    def __exit__(self, *_: object) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def _quote(body: str) -> str:
    # nginx single-quoted strings: only the quote and the backslash need escaping.
    return body.replace("\\", "\\\\").replace("'", "\\'")

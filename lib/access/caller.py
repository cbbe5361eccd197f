"""The caller: who is calling and what they may do, as the routes see it."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import anyio

from lib.access.cache_rules import CacheRule
from lib.access.completion_limits import check_completion_fields
from lib.access.limits import AccessRecord, Limiter, Reservation
from lib.access.policy import NamedKey, Policy
from lib.errors import ModelNotAllowedError
from lib.model_ids import is_model_allowed

# Without a usage report, a text's tokens are estimated at four characters each.
_CHARS_PER_TOKEN = 4
# The length fields a request may carry at its top level, in the order a trace reports them.
_LENGTH_FIELDS = ("max_tokens", "max_completion_tokens", "max_output_tokens")
# Counting tokens after a hang-up must not be cancelled with the request, nor hang.
_CHARGE_BOUND_S = 2.0


@dataclass(slots=True)
class Caller:
    """One request's caller: its key (name and policy), and the limits that apply to it.

    A caller with a bearer token also has a `user`: the end user the token names, with the
    token's own limits (or `[users]`), counted apart from the key's, which apply too.
    `response_headers` are added to the response, whatever it is (the rate-limit headers).
    `cache` is how its answers are cached, None when they are not.
    """

    key: NamedKey
    limiter: Limiter
    record: AccessRecord
    user: NamedKey | None = None
    cache: CacheRule | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    _charged: bool = False
    _reservation: Reservation | None = None
    # With `settle_at_response_end`, the count waits here for the ledger's write to carry it.
    _settle_at_end: bool = False
    _pending_tokens: int | None = None

    @property
    def name(self) -> str:
        """The key's name: shown in logs and `/api/limits`, never the key."""
        return self.key.name

    @property
    def policy(self) -> Policy:
        """What the key may do."""
        return self.key.policy

    @property
    def via_token(self) -> bool:
        """True when the caller presented a token rather than a client key."""
        return self.user is not None

    def check_model(self, model: str) -> None:
        """Refuse a model outside the key's own `models`, or the token's (the deployment's
        allowlist is checked when the model is resolved)."""
        for holder, models in (("key", self.policy.models), ("token", self._user_models)):
            if models is not None and not is_model_allowed(model, models):
                raise ModelNotAllowedError(
                    f"The model '{model}' is not allowed for this {holder}. "
                    f"Allowed: {', '.join(models)}.",
                    param="model",
                )

    def may_use(self, model: str) -> bool:
        """True when neither the key's `models` nor the token's leaves `model` out (a
        fallback the caller may not use is not tried)."""
        return all(
            models is None or is_model_allowed(model, models)
            for models in (self.policy.models, self._user_models)
        )

    @property
    def _user_models(self) -> tuple[str, ...] | None:
        return self.user.policy.models if self.user is not None else None

    @property
    def completion_cap(self) -> int | None:
        """The most completion tokens one request may ask for: the key's `max_tokens`, or a
        token user's when smaller; None for no cap."""
        caps = [self.policy.max_tokens, self.user.policy.max_tokens if self.user else None]
        return min((c for c in caps if c is not None), default=None)

    def cap_completion_tokens(
        self, payload: dict[str, Any], *, send_as: str | None = "max_tokens"
    ) -> None:
        """Check every completion length field in `payload` and hold it to the cap.

        Each length field (`max_tokens`, `max_completion_tokens`, `max_output_tokens`,
        `max_new_tokens`) must be a positive integer (422 naming it); with a cap, each times
        `n` (the choices asked for) must be within it (400 `max_tokens_above_cap`), and when
        none is set, `send_as` is sent with the cap shared among the `n` choices.
        """
        check_completion_fields(payload, self.completion_cap, send_as=send_as)
        parameters = payload.get("parameters")
        sent = [payload.get(name) for name in _LENGTH_FIELDS]
        if isinstance(parameters, dict):
            sent.append(parameters.get("max_new_tokens"))
        self.record.max_tokens = next((n for n in sent if isinstance(n, int)), None)

    async def admit(self, body_bytes: int) -> None:
        """Count this request on the user's limits and the key's, holding its worst case in
        tokens (`body_bytes` / 4 for the prompt, plus the completion cap), in one atomic step;
        or raise the refusal (429, 503). The user's headers win: theirs are the limits a
        token's holder meets first."""
        reserve = _estimate(body_bytes) + (self.completion_cap or 0)
        holders = [h for h in (self.user, self.key) if h is not None]
        headers, self._reservation = await self.limiter.admit(holders, reserve, self.record)
        self.response_headers.update(headers)

    async def charge(
        self, usage: Any, *, payload: dict[str, Any] | None = None, answer_chars: int = 0
    ) -> None:
        """Count the request's tokens once: the upstream's `usage` report, or, when none came
        (a caller who hung up), an estimate from the prompt in `payload` and the text sent;
        the admission's reservation is settled to that count.

        Without limits it only notes the tokens for the log line. For a caller who hung up
        it is shielded from the cancellation (and bounded), so the count is still written.
        """
        if self._charged:
            return
        self._charged = True
        prompt, completion = _reported_tokens(usage)
        if prompt is None or completion is None:
            prompt = _estimate(prompt_chars(payload))
            completion = _estimate(answer_chars)
        self.record.prompt_tokens, self.record.completion_tokens = prompt, completion
        await self._settle(prompt + completion)

    async def charge_cache_hit(self, saved_tokens: int) -> None:
        """Count a request answered from the response cache: it stays one request on the rpm
        windows, its reservation is given back (no tokens), and the ledger notes the hit
        and the `saved_tokens` the upstream would have spent."""
        if self._charged:
            return
        self._charged = True
        self.record.prompt_tokens = self.record.completion_tokens = 0
        self.record.cache = "hit"
        self.record.saved_tokens += max(saved_tokens, 0)
        await self._settle(0)

    def note_cached_input(self, payload: dict[str, Any]) -> None:
        """Note, for the ledger, the tokens of a prompt (`payload`) the cache answered, as
        estimated from its text: an embeddings batch's cached inputs."""
        self.record.saved_tokens += _estimate(prompt_chars(payload))

    async def release(self) -> None:
        """Give back the reservation of a request that failed before the upstream answered
        (nothing was generated); a no-op once it has been charged."""
        if not self._charged:
            self._charged = True
            await self._settle(0)

    def settle_at_response_end(self) -> None:
        """Hold the settlement until `take_settlement` (the usage ledger's write, as the
        response ends), so one store call carries both."""
        self._settle_at_end = True

    def take_settlement(self) -> tuple[Reservation, int] | None:
        """The reservation and the tokens it is to be settled to, if a count is waiting; from
        now on a count settles at once."""
        self._settle_at_end = False
        tokens, self._pending_tokens = self._pending_tokens, None
        if tokens is None or self._reservation is None:
            return None
        return self._reservation, tokens

    async def _settle(self, tokens: int) -> None:
        reservation = self._reservation
        if reservation is None:
            return
        if self._settle_at_end:
            self._pending_tokens = tokens
            return
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # The caller hung up: count anyway, within a bound, despite the cancellation.
            with anyio.move_on_after(_CHARGE_BOUND_S, shield=True):
                await self.limiter.settle(reservation, tokens)
        else:
            await self.limiter.settle(reservation, tokens)


def _reported_tokens(usage: Any) -> tuple[int | None, int | None]:
    """Chat's `prompt_tokens`/`completion_tokens`, or the Responses API's input/output; an
    embeddings report (`prompt_tokens` alone) has no completion."""
    if not isinstance(usage, dict):
        return None, None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if completion is None and "total_tokens" in usage and "prompt_tokens" in usage:
        completion = 0
    if not _is_count(prompt) or not _is_count(completion):
        return None, None
    return max(prompt, 0), max(completion, 0)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def prompt_chars(payload: dict[str, Any] | None) -> int:
    """The characters of a request's prompt: chat's `messages`, the Responses API's
    `instructions` and `input`, a task's or an embedding's `inputs`/`input`."""
    payload = payload or {}
    return sum(
        _text_chars(payload.get(name)) for name in ("messages", "instructions", "input", "inputs")
    )


def _text_chars(value: Any, depth: int = 0) -> int:
    """The characters of every text in `value` (strings in lists and objects, nested a bit):
    message contents, content parts, task inputs. Numbers (token ids) count one each."""
    if isinstance(value, str):
        return len(value)
    if depth > 8:
        return 0
    if isinstance(value, dict):
        return sum(
            _text_chars(v, depth + 1) for k, v in value.items() if k not in _NOT_PROMPT_FIELDS
        )
    if isinstance(value, list):
        return sum(_text_chars(v, depth + 1) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return _CHARS_PER_TOKEN  # a token id of an embeddings input
    return 0


# Fields of a message or part that are not text the model reads.
_NOT_PROMPT_FIELDS = frozenset({"role", "type", "id", "name", "tool_call_id", "image_url"})


def _estimate(chars: int) -> int:
    return math.ceil(chars / _CHARS_PER_TOKEN)

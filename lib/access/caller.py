"""The caller: who is calling and what they may do, as the routes see it."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import anyio

from lib.access.limits import AccessRecord, Limiter
from lib.access.policy import NamedKey, Policy
from lib.errors import ClientRequestError, ModelNotAllowedError
from lib.model_ids import is_model_allowed

# Without a usage report, a text's tokens are estimated at four characters each.
_CHARS_PER_TOKEN = 4
# Counting tokens after a hang-up must not be cancelled with the request, nor hang.
_CHARGE_BOUND_S = 2.0


@dataclass(slots=True)
class Caller:
    """One request's caller: its key (name and policy), and the limits that apply to it.

    A caller with a bearer token also has a `user`: the end user the token names, with the
    token's own limits (or `[users]`), counted apart from the key's, which apply too.
    `response_headers` are added to the response, whatever it is (the rate-limit headers).
    """

    key: NamedKey
    limiter: Limiter
    record: AccessRecord
    user: NamedKey | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    _charged: bool = False

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

    @property
    def _user_models(self) -> tuple[str, ...] | None:
        return self.user.policy.models if self.user is not None else None

    def cap_completion_tokens(self, payload: dict[str, Any], field: str = "max_tokens") -> None:
        """Apply the key's `max_tokens` (and a token user's, the smaller) to a payload: send it
        as `field` when the caller set no limit, refuse (400) a request that asks for more."""
        caps = [self.policy.max_tokens, self.user.policy.max_tokens if self.user else None]
        cap = min((c for c in caps if c is not None), default=None)
        if cap is None:
            return
        for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
            asked = payload.get(name)
            if asked is None:
                continue
            if isinstance(asked, int) and not isinstance(asked, bool) and asked > cap:
                raise ClientRequestError(
                    f"'{name}' is {asked}, above this key's cap of {cap} tokens; "
                    f"ask for {cap} or fewer.",
                    param=name,
                    code="max_tokens_above_cap",
                )
            return
        payload[field] = cap

    async def admit(self) -> None:
        """Count this request against the user's limits, then the key's, or raise the
        refusal (429, 503). The user's headers win: theirs are the limits a token's holder
        meets first."""
        headers: dict[str, str] = {}
        if self.user is not None and self.limiter.applies_to(self.user):
            headers = await self.limiter.admit(self.user, self.record)
        if self.limiter.applies_to(self.key):
            self.response_headers.update(await self.limiter.admit(self.key, self.record))
        self.response_headers.update(headers)

    async def charge(
        self, usage: Any, *, payload: dict[str, Any] | None = None, answer_chars: int = 0
    ) -> None:
        """Count the request's tokens once: the upstream's `usage` report, or, when none came
        (a caller who hung up), an estimate from the prompt in `payload` and the text sent.

        Without limits it only notes the tokens for the log line. For a caller who hung up
        it is shielded from the cancellation (and bounded), so the count is still written.
        """
        if self._charged:
            return
        self._charged = True
        prompt, completion = _reported_tokens(usage)
        if prompt is None or completion is None:
            prompt = _estimate(_prompt_chars(payload))
            completion = _estimate(answer_chars)
        self.record.prompt_tokens, self.record.completion_tokens = prompt, completion
        counted = [h for h in (self.user, self.key) if h is not None and self.limiter.applies_to(h)]
        if not counted:
            return
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # The caller hung up: count anyway, within a bound, despite the cancellation.
            with anyio.move_on_after(_CHARGE_BOUND_S, shield=True):
                await self._add_tokens(counted, prompt + completion)
        else:
            await self._add_tokens(counted, prompt + completion)

    async def _add_tokens(self, counted: list[NamedKey], tokens: int) -> None:
        """The user's count (a token's holder), then the key's."""
        for holder in counted:
            await self.limiter.add_tokens(holder, tokens)


def _reported_tokens(usage: Any) -> tuple[int | None, int | None]:
    """Chat's `prompt_tokens`/`completion_tokens`, or the Responses API's input/output."""
    if not isinstance(usage, dict):
        return None, None
    prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
    completion = usage.get("completion_tokens", usage.get("output_tokens"))
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None, None
    return max(prompt, 0), max(completion, 0)


def _prompt_chars(payload: dict[str, Any] | None) -> int:
    """The characters of the prompt: chat's `messages`, or the Responses API's `input`."""
    payload = payload or {}
    if isinstance(payload.get("input"), str):
        return len(payload["input"])
    total = 0
    for message in payload.get("messages") or payload.get("input") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            total += len(content)
        elif isinstance(content, list):
            total += sum(len(str(p.get("text", ""))) for p in content if isinstance(p, dict))
    return total


def _estimate(chars: int) -> int:
    return math.ceil(chars / _CHARS_PER_TOKEN)

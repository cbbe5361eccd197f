"""One request's dealings with the response cache: whether it is looked up and kept, the
lookup itself, and the `x-promptgate-cache` and `age` headers it answers with.

`x-promptgate-cache` says what the read did: `hit` (answered from the cache), `miss` (looked
up, not found: the upstream answered) or `bypass` (not looked up: `Cache-Control: no-cache`,
or an answer that depends on sampling, which the caller's policy does not cache).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lib.inference.cache_keys import cache_directives, cache_key, is_deterministic

if TYPE_CHECKING:
    from lib.access import CachedAnswer, Caller, ResponseCache
    from lib.upstream import UpstreamCall

CACHE_HEADER = "x-promptgate-cache"


@dataclass(slots=True)
class CacheLookup:
    """Where one request's answer is looked for and kept; `key` None: it is neither."""

    cache: ResponseCache
    caller: Caller
    model: str
    key: str | None
    read: bool
    write: bool

    async def read_entry(self) -> CachedAnswer | None:
        """The kept answer, when the read is allowed and one is there (bounded: a failing
        store is a miss)."""
        if self.key is None or not self.read:
            return None
        return await self.cache.get(self.key)

    def mark(self, verdict: str, age_s: int | None = None) -> None:
        """Answer with `verdict` in `x-promptgate-cache` (and `age` on a hit), and note it
        for the log line and the ledger."""
        headers = self.caller.response_headers
        headers[CACHE_HEADER] = verdict
        if age_s is not None:
            headers["age"] = str(age_s)
        self.caller.record.cache = verdict

    async def keep(self, body: Any, answered_by: str) -> None:
        """Keep `body` as the answer of the model asked (when the write is allowed; None, or
        an answer of another model, keeps nothing: a fallback's answer is not the asked
        model's, and the asked model may answer the next request again)."""
        rule = self.caller.cache
        if body is None or self.key is None or not self.write or rule is None:
            return
        if answered_by != self.model:
            return
        await self.cache.put(self.key, body, rule.ttl_s)

    def keeping(
        self,
        call: UpstreamCall,
        feed: Callable[[bytes], None],
        gathered: Callable[[], Any],
    ) -> Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]]:
        """A wrap for a relayed stream: its pieces pass on as they come, each fed to `feed`;
        once the stream has ended whole, `gathered()` (None: nothing to keep) is kept as the
        answer of the model that answered (`call.model`)."""

        async def keep(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            async with aclosing(events):  # a hang-up closes only this generator
                async for piece in events:
                    feed(piece)
                    yield piece
            await self.keep(gathered(), call.model)

        return keep


def look_up(
    cache: ResponseCache,
    caller: Caller,
    route: str,
    payload: dict[str, Any],
    cache_control: str | None,
) -> CacheLookup:
    """The request's lookup, marked `miss` or `bypass` until a hit says otherwise."""
    rule = caller.cache
    directives = cache_directives(cache_control)
    key, model = None, payload.get("model", "")
    if rule is not None and (rule.nondeterministic or is_deterministic(payload)):
        key = cache_key(rule.namespace, route, model, payload)
    lookup = CacheLookup(cache, caller, model, key, directives.read, directives.write)
    lookup.mark("miss" if key is not None and directives.read else "bypass")
    return lookup

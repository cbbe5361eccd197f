"""The upstream connection: one pool per event loop."""

from __future__ import annotations

import asyncio

from lib.upstream.connection import Connection
from tests.conftest import make_settings


def test_pool_is_reused_within_a_loop_and_renewed_for_a_new_loop() -> None:
    connection = Connection(make_settings())

    async def pool_twice() -> tuple[object, object]:
        return connection._transport_for_loop(), connection._transport_for_loop()

    first, second = asyncio.run(pool_twice())
    assert first is second
    third, _ = asyncio.run(pool_twice())  # a new loop, as after a runtime restart
    assert third is not first

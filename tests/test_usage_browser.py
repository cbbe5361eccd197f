"""The owner's usage page in a real browser: Debian's Chromium under Playwright, against the app
under uvicorn (its ledger filled by real traffic from two keys and two token users through the
stand-in upstream). Every request the browser makes beyond loopback is blocked and counted.

Without Chromium these tests skip, loudly; with CI=true they fail instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lib.app import create_app
from lib.standin import StandinState, create_standin_app
from tests.browser import (
    DESKTOP,
    PHONE,
    Watch,
    assert_clean,
    open_page,
    save_screenshot,
)
from tests.conftest import CANARY_KEY, CANARY_TOKEN, CANARY_TOKEN_SECRET, make_settings, sha256_hex
from tests.servers import serve_on_loopback

ADMIN_KEY = "pg_test_canary_admin_browser"
OTHER_KEY = "pg_test_canary_key_browser_other"
HELLO = {"messages": [{"role": "user", "content": "Hello there, how are you?"}]}


POLICY = f"""
[keys.mobile-app]
sha256 = "{sha256_hex(CANARY_KEY)}"

[keys.backend]
sha256 = "{sha256_hex(OTHER_KEY)}"

[admins.ops]
sha256 = "{sha256_hex(ADMIN_KEY)}"
"""


@dataclass
class Live:
    """The proxy on loopback, its ledger holding some traffic."""

    url: str


def _send_traffic(url: str) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        app = {"Authorization": f"Bearer {CANARY_KEY}"}
        for user, count in (("alice@example.com", 3), ("bob", 1)):
            minted = client.post("/v1/tokens", json={"user": user}, headers=app)
            token = {"Authorization": f"Bearer {minted.json()['token']}"}
            for _ in range(count):
                assert client.post("/v1/chat/completions", json=HELLO, headers=token).is_success
        backend = {"Authorization": f"Bearer {OTHER_KEY}"}
        for _ in range(2):
            assert client.post("/v1/chat/completions", json=HELLO, headers=backend).is_success
        bad = client.post("/v1/chat/completions", json={"messages": 3}, headers=backend)
        assert bad.status_code == 422


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    state = StandinState(token=CANARY_TOKEN)
    with serve_on_loopback(create_standin_app(state)) as standin_url:
        settings = make_settings(
            hf_base_url=standin_url, keys_toml=POLICY, token_secret=CANARY_TOKEN_SECRET
        )
        with serve_on_loopback(create_app(settings)) as url:
            _send_traffic(url)
            yield Live(url=url)


def _api(live: Live, **query: str) -> dict[str, Any]:
    response = httpx.get(
        f"{live.url}/api/usage",
        params=query,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code == 200
    return response.json()


def _show(page: Any, live: Live, key: str = ADMIN_KEY) -> None:
    page.goto(f"{live.url}/usage")
    page.get_by_label("Admin key").fill(key)
    page.get_by_role("button", name="Show usage").click()


def _drawn(page: Any) -> dict[str, Any]:
    page.wait_for_function("() => window.promptgateUsage && window.promptgateUsage.latency")
    return page.evaluate("() => window.promptgateUsage")


def test_the_charts_draw_what_the_api_reports(
    live: Live, browser: Any, watch: Watch, tmp_path: Path
) -> None:
    page = open_page(browser, DESKTOP, watch)
    _show(page, live)
    drawn = _drawn(page)
    by_key = _api(live, group_by="key", bucket="day")
    assert drawn["totals"] == by_key["totals"]
    assert by_key["totals"]["requests"] == 7 and by_key["totals"]["refused"] == 1
    # Tokens per day by key: the sum of each key's column is its total over the range.
    keys = {g["group"]: g["total_tokens"] for g in by_key["groups"]}
    assert {name: sum(days) for name, days in drawn["tokens"]["keys"].items()} == keys
    assert set(keys) == {"mobile-app", "backend"}
    hourly = _api(live, group_by="key", bucket="hour")
    assert sum(drawn["requests"]["requests"]) == hourly["totals"]["requests"] == 7
    assert sum(drawn["requests"]["errors"]) == 1
    by_model = _api(live, group_by="model", bucket="day")
    latencies = {(p["group"] or "(no model)"): p["latency_ms_mean"] for p in by_model["series"]}
    assert {
        name: next(v for v in values if v is not None)
        for name, values in drawn["latency"]["models"].items()
    } == latencies
    assert page.locator("#chart-tokens canvas").count() == 1
    assert page.locator("#totals [data-total='Requests'] strong").inner_text() == "7"
    assert page.locator("#totals [data-total='Cache hits'] strong").inner_text() == str(
        by_key["totals"]["cache_hits"]
    )
    save_screenshot(page, "screenshot-usage.png", tmp_path)
    assert_clean(watch)
    page.context.close()


def test_a_key_s_top_users_are_listed_with_their_tokens(
    live: Live, browser: Any, watch: Watch
) -> None:
    page = open_page(browser, DESKTOP, watch)
    _show(page, live)
    _drawn(page)
    page.get_by_label("Key", exact=True).select_option("mobile-app")
    page.get_by_role("button", name="Show usage").click()
    page.wait_for_function("() => window.promptgateUsage.users !== null")
    rows = page.locator("#users tbody tr")
    rows.first.wait_for()
    users = _api(live, group_by="user", key="mobile-app")["groups"]
    assert [g["group"] for g in users] == ["alice@example.com", "bob"]
    shown = [rows.nth(i).locator("td").nth(0).inner_text() for i in range(rows.count())]
    assert shown == ["alice@example.com", "bob"]
    assert rows.nth(0).locator("td").nth(1).inner_text() == f"{users[0]['total_tokens']:,}"
    assert_clean(watch)
    page.context.close()


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("pg_not_an_admin_key_at_all", "That admin key was not accepted."),
        (CANARY_KEY, "reading usage needs an admin key"),
    ],
)
def test_a_wrong_key_shows_what_is_wrong(
    live: Live, browser: Any, watch: Watch, key: str, says: str
) -> None:
    page = open_page(browser, DESKTOP, watch)
    _show(page, live, key)
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert says in alert.inner_text()
    assert page.locator("#report").is_hidden()
    assert_clean(watch)
    page.context.close()


def test_the_key_stays_in_the_tab_only(live: Live, browser: Any, watch: Watch) -> None:
    page = open_page(browser, DESKTOP, watch)
    _show(page, live)
    _drawn(page)
    stored = page.evaluate("() => [sessionStorage.length, localStorage.length, document.cookie]")
    assert stored == [1, 0, ""]
    page.reload()
    _drawn(page)  # the tab remembers it: the report comes back without typing it again
    assert_clean(watch)
    page.context.close()


def test_at_phone_width_nothing_overflows(live: Live, browser: Any, watch: Watch) -> None:
    page = open_page(browser, PHONE, watch)
    _show(page, live)
    _drawn(page)
    widths = page.evaluate(
        "() => [document.documentElement.scrollWidth, window.innerWidth,"
        " document.querySelector('#chart-tokens canvas').getBoundingClientRect().right]"
    )
    scroll_width, viewport, chart_right = widths
    assert scroll_width <= viewport
    assert chart_right <= viewport
    assert_clean(watch)
    page.context.close()

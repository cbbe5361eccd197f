"""The pages' HTTP side, without a browser: what `/`, `/docs` and `/redoc` send, and their files."""

from __future__ import annotations

import base64
import hashlib
import re
import sys

import pytest
from fastapi.testclient import TestClient

from lib.routes.pages import CONTENT_SECURITY_POLICY, REDOC_CONTENT_SECURITY_POLICY
from tests.conftest import CANARY_KEY, CANARY_TOKEN

PAGES = {"/": CONTENT_SECURITY_POLICY, "/docs": CONTENT_SECURITY_POLICY}
PAGES["/redoc"] = REDOC_CONTENT_SECURITY_POLICY
_REFERENCE = re.compile(r'(?:src|href)="([^"]+)"')


def _references(html: str, page: str) -> list[str]:
    """The URLs a page loads or links to, made absolute against the page's own path."""
    urls = []
    for ref in _REFERENCE.findall(html):
        if ref.startswith("data:"):
            continue  # inline by definition: the playground's empty favicon
        urls.append(ref if ref.startswith("/") else page.rsplit("/", 1)[0] + "/" + ref)
    return urls


@pytest.mark.parametrize("path", sorted(PAGES))
def test_page_is_html_under_a_same_origin_policy_without_inline_code(
    client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["content-security-policy"] == PAGES[path]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-cache"
    html = response.text
    scripts = re.findall(r"<script[^>]*>", html)
    assert scripts and all(" src=" in tag for tag in scripts)
    bodies = re.findall(r"<script[^>]*>(.*?)</script>", html, flags=re.DOTALL)
    assert len(bodies) == len(scripts) and not any(body.strip() for body in bodies)
    assert "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers
    assert "http://" not in html and "https://" not in html
    assert CANARY_KEY not in html and CANARY_TOKEN not in html


def test_policy_allows_only_this_origin(client: TestClient) -> None:
    directives = dict(
        part.strip().split(" ", 1) for part in CONTENT_SECURITY_POLICY.split(";") if part.strip()
    )
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["connect-src"] == "'self'" and directives["frame-ancestors"] == "'none'"
    assert "unsafe" not in CONTENT_SECURITY_POLICY and "http" not in CONTENT_SECURITY_POLICY


def test_redoc_policy_differs_only_by_style_hashes_one_of_them_the_empty_string(
    client: TestClient,
) -> None:
    empty = base64.b64encode(hashlib.sha256(b"").digest()).decode()
    hashes = re.findall(r"'sha256-([^']+)'", REDOC_CONTENT_SECURITY_POLICY)
    assert empty in hashes and len(hashes) == 2
    stripped = re.sub(r" 'sha256-[^']+'", "", REDOC_CONTENT_SECURITY_POLICY)
    assert stripped == CONTENT_SECURITY_POLICY


@pytest.mark.parametrize("path", sorted(PAGES))
def test_every_file_a_page_references_is_served_here(client: TestClient, path: str) -> None:
    references = _references(client.get(path).text, path)
    assert references
    for url in references:
        if url in PAGES:
            continue  # the links between the pages
        response = client.get(url)
        assert response.status_code == 200, url
        assert response.content, url
        kind = response.headers["content-type"]
        if url.endswith(".js"):
            assert kind == "text/javascript; charset=utf-8", url
        elif url.endswith(".css"):
            assert kind == "text/css; charset=utf-8", url


def test_vendor_files_are_versioned_and_cached_for_good(client: TestClient) -> None:
    docs = client.get("/docs").text
    bundle = next(u for u in _references(docs, "/docs") if u.endswith("swagger-ui-bundle.js"))
    assert re.fullmatch(r"/static-docs/\d+\.\d+\.\d+/swagger-ui-bundle\.js", bundle)
    response = client.get(bundle)
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert b"SwaggerUIBundle" in response.content[:2000]
    redoc = client.get(bundle.replace("swagger-ui-bundle.js", "redoc.standalone.js"))
    assert redoc.status_code == 200 and len(redoc.content) > 500_000
    # A page of another version must not be answered with this version's file for a year.
    stale = client.get("/static-docs/0.0.1/swagger-ui-bundle.js")
    assert stale.status_code == 404 and stale.json()["error"]["code"] == "not_found"


def test_own_files_revalidate(client: TestClient) -> None:
    response = client.get("/static-docs/app/playground.js")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-cache" and response.headers["etag"]
    assert b"sessionStorage" in response.content and b"localStorage" not in response.content


@pytest.mark.parametrize(
    "path",
    [
        "/static-docs/app/playground.html",  # served at / only
        "/static-docs/app/../pages.py",
        "/static-docs/app/%2e%2e%2fpages.py",
        "/static-docs/0.3.0/standalone_docs.py",
        "/static-docs/0.3.0/..%2f..%2fscripts.py",
    ],
)
def test_nothing_but_the_listed_files_is_served(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_pages_need_no_key_and_stay_out_of_the_openapi_schema(client: TestClient) -> None:
    assert client.get("/").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert not any(p in paths for p in ("/", "/docs", "/redoc"))
    assert not any(p.startswith("/static-docs") for p in paths)


def test_serving_the_docs_does_not_import_the_asset_package(client: TestClient) -> None:
    assert client.get("/docs").status_code == 200
    assert client.get("/redoc/logo-mini.svg").headers["content-type"] == "image/svg+xml"
    assert "fastapi_standalone_docs" not in sys.modules

"""The browser pages: the playground at `/`, the owner's usage page at `/usage`, Swagger UI at
`/docs` and ReDoc at `/redoc`.

Everything they load comes from this origin: the playground's own files from `lib/static/`,
Swagger UI and ReDoc from the pinned `fastapi-standalone-docs` package, whose files are
looked up only when a page asks for them (cold starts of the API do not pay for it).
The pages carry a Content-Security-Policy that allows this origin only (and `data:` images),
so no inline script: Swagger UI's start-up code lives in `lib/static/swagger-init.js`.
"""

from __future__ import annotations

import functools
import html
import importlib.metadata
import importlib.util
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.exceptions import HTTPException

ASSET_PACKAGE = "fastapi-standalone-docs"
ASSET_PREFIX = "/static-docs"
# `data:` images only: swagger-ui.css draws its icons with data: URIs. No other origin.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; worker-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
# ReDoc styles itself with styled-components, which adds empty <style> elements and fills them
# through the CSSOM, and with one fixed stylesheet (perfect-scrollbar's). The two hashes allow
# exactly those: the empty string's, and that stylesheet's in the pinned ReDoc 2.5.4. No other
# inline style. The browser tests fail on any CSP violation, so a new ReDoc shows up there.
REDOC_CONTENT_SECURITY_POLICY = CONTENT_SECURITY_POLICY.replace(
    "style-src 'self';",
    "style-src 'self' 'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=' "
    "'sha256-QMIg+bpjm3JdElJ388KYke01izlUW0UoNOeKjpMxdgc=';",
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The pages are small and change with each deployment: always revalidate.
    "Cache-Control": "no-cache",
}
# Vendor files live under a URL holding the package version, so they can be cached for good.
_IMMUTABLE = "public, max-age=31536000, immutable"

_STATIC_DIR = Path(__file__).parents[1] / "static"
# The playground's files, by URL name; nothing else in lib/static/ is served.
_OWN_FILES = {
    "playground.css": "text/css; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "swagger-init.js": "text/javascript; charset=utf-8",
    "usage.css": "text/css; charset=utf-8",
    "usage.js": "text/javascript; charset=utf-8",
    # uPlot 1.6.32 (MIT, uplot-LICENSE.txt), vendored from npm: the usage page's charts.
    "uplot.min.css": "text/css; charset=utf-8",
    "uplot.min.js": "text/javascript; charset=utf-8",
}
# The vendor files served, by URL name: (path inside the package's static/, media type).
_VENDOR_FILES = {
    "swagger-ui-bundle.js": ("swagger/swagger-ui-bundle.js", "text/javascript; charset=utf-8"),
    "swagger-ui.css": ("swagger/swagger-ui.css", "text/css; charset=utf-8"),
    "redoc.standalone.js": ("redoc/redoc.standalone.js", "text/javascript; charset=utf-8"),
    "favicon.png": ("fastapi/favicon.png", "image/png"),
}


def include_pages(app: FastAPI) -> None:
    """Serve the playground at `/`, Swagger UI at `/docs`, ReDoc at `/redoc` and their files."""
    app.add_api_route("/", _playground, methods=["GET"], include_in_schema=False)
    app.add_api_route("/usage", _usage_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/docs", _swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", _redoc, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc/logo-mini.svg", _redoc_logo, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        f"{ASSET_PREFIX}/app/{{name}}", _own_file, methods=["GET"], include_in_schema=False
    )
    app.add_api_route(
        f"{ASSET_PREFIX}/{{version}}/{{name}}",
        _vendor_file,
        methods=["GET"],
        include_in_schema=False,
    )


async def _playground() -> Response:
    return FileResponse(
        _STATIC_DIR / "playground.html",
        media_type="text/html; charset=utf-8",
        headers=PAGE_HEADERS,
    )


async def _usage_page() -> Response:
    # The page holds no data: it asks GET /api/usage with the admin key the owner types in.
    return FileResponse(
        _STATIC_DIR / "usage.html",
        media_type="text/html; charset=utf-8",
        headers=PAGE_HEADERS,
    )


async def _swagger_ui(request: Request) -> HTMLResponse:
    vendor = _vendor_url(request)
    own = f"{_root(request)}{ASSET_PREFIX}/app"
    body = _page(
        "API docs",
        vendor,
        f'<link rel="stylesheet" href="{vendor}/swagger-ui.css">',
        f"""<div id="swagger-ui" data-openapi-url="{_openapi_url(request)}"></div>
<script src="{vendor}/swagger-ui-bundle.js"></script>
<script src="{own}/swagger-init.js"></script>""",
    )
    return HTMLResponse(body, headers=PAGE_HEADERS)


async def _redoc(request: Request) -> HTMLResponse:
    vendor = _vendor_url(request)
    # ReDoc starts itself on a <redoc spec-url> element: no init script is needed.
    body = _page(
        "API reference",
        vendor,
        "",
        f"""<redoc spec-url="{_openapi_url(request)}" disable-search="true"></redoc>
<script src="{vendor}/redoc.standalone.js"></script>""",
    )
    headers = {**PAGE_HEADERS, "Content-Security-Policy": REDOC_CONTENT_SECURITY_POLICY}
    return HTMLResponse(body, headers=headers)


def _page(title: str, vendor: str, head: str, body: str) -> str:
    """A docs page: the shared head (title, icon, then `head`), and `body`."""
    head = f"\n{head}" if head else ""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>promptgate: {title}</title>
<link rel="icon" type="image/png" href="{vendor}/favicon.png">{head}
</head>
<body>
{body}
</body>
</html>
"""


async def _redoc_logo() -> Response:
    # The packaged ReDoc asks for its footer logo at `{page path}/logo-mini.svg`.
    return FileResponse(
        _asset_dir() / "redoc/logo-mini.svg",
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )


async def _own_file(name: str) -> Response:
    media_type = _OWN_FILES.get(name)
    if media_type is None:
        raise HTTPException(404)
    return FileResponse(
        _STATIC_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"}
    )


async def _vendor_file(version: str, name: str) -> Response:
    entry = _VENDOR_FILES.get(name)
    if entry is None or version != _asset_version():
        raise HTTPException(404)
    relative_path, media_type = entry
    return FileResponse(
        _asset_dir() / relative_path, media_type=media_type, headers={"Cache-Control": _IMMUTABLE}
    )


@functools.cache
def _asset_dir() -> Path:
    """The installed package's static/ folder, found without importing the package."""
    spec = importlib.util.find_spec(ASSET_PACKAGE.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{ASSET_PACKAGE} is not installed; see requirements.txt")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@functools.cache
def _asset_version() -> str:
    return importlib.metadata.version(ASSET_PACKAGE)


def _root(request: Request) -> str:
    return html.escape(request.scope.get("root_path", "").rstrip("/"), quote=True)


def _vendor_url(request: Request) -> str:
    return f"{_root(request)}{ASSET_PREFIX}/{html.escape(_asset_version(), quote=True)}"


def _openapi_url(request: Request) -> str:
    return f"{_root(request)}{html.escape(request.app.openapi_url or '', quote=True)}"

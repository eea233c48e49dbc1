"""Serve the console page, its static files, and Swagger UI from vendored files.

Nothing here needs an API key: only ``/v1`` is protected (api/security.py), and
the page itself holds no data, only the resource declarations that
``/openapi.json`` publishes too. Every asset is served from the package, so the
console and ``/docs`` work with no network at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from bulkport import __version__
from bulkport.jobs.status import JobStatus
from bulkport.pipeline.export_spec import FILTERS
from bulkport.pipeline.formats import Format
from bulkport.resources import RESOURCES

STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/console/static"
#: The vendored swagger-ui-dist release (npm), kept with its LICENSE and NOTICE.
SWAGGER_UI = f"{STATIC_URL}/vendor/swagger-ui-dist-5.35.0"
#: Where the page gets its data; replaced by a JSON script element.
META_MARK = "<!--bulkport-meta-->"
#: The page is tiny and must pick up a new release at once. Its stylesheet and entry
#: script carry the version in their URL; the other files are revalidated by their
#: ETag / Last-Modified (StaticFiles).
NO_CACHE = {"Cache-Control": "no-cache"}


def console_meta() -> dict[str, Any]:
    """What the page needs to know about the API: resources, fields, filters, statuses."""
    resources = {}
    for name, res in RESOURCES.items():
        filters = []
        for param, d in FILTERS[name].items():
            if param.endswith("_since"):
                continue  # an alias of <field>_from: one input is enough
            field = res.field(d.field)
            choices = list(field.choices()) if field.choices is not None else None
            if d.kind.value == "bool":
                choices = ["true", "false"]
            filters.append({"param": param, "field": d.field, "op": d.op,
                            "kind": d.kind.value, "choices": choices})
        resources[name] = {"fields": [{"name": f.name, "kind": f.kind.value}
                                      for f in res.fields],
                           "filters": filters}
    return {"version": __version__, "resources": resources,
            "statuses": [s.value for s in JobStatus], "formats": [f.value for f in Format],
            "modes": ["insert", "upsert"]}


def render_page() -> str:
    """The console's HTML with its metadata (built once per app: roles come from settings)."""
    meta = orjson.dumps(console_meta()).decode().replace("</", "<\\/")
    html = (STATIC_DIR / "index.html").read_text(encoding="utf-8")
    html = html.replace("{{version}}", __version__)
    return html.replace(META_MARK, f'<script id="bulkport-meta" type="application/json">'
                                   f"{meta}</script>")


def install(app: FastAPI) -> None:
    """Add the console (``/``, ``/console/static``) and Swagger UI (``/docs``) to ``app``."""
    openapi_url = app.openapi_url or "/openapi.json"
    page = render_page()

    @app.get("/", include_in_schema=False)
    def console_page() -> HTMLResponse:
        return HTMLResponse(page, headers=NO_CACHE)

    @app.get("/docs", include_in_schema=False)
    def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} — API",
            swagger_js_url=f"{SWAGGER_UI}/swagger-ui-bundle.js",
            swagger_css_url=f"{SWAGGER_UI}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon.svg",
            # No online validator badge: it would call validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None, "persistAuthorization": False})

    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="console-static")

"""Routes of the console on the inference HTTP server's FastAPI app: the page and its static files (open,
so a browser can load them before it has the token), and JSON under /console/api/ (behind the same
bearer token as /v1). Routes only translate HTTP to `Console` calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tutorforge.console.views import Connections, Console

STATIC = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/console/static/"
# Everything the page loads comes from this server: the cluster may have no egress.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'"
)


def is_public(scope: dict[str, Any]) -> bool:
    """The page and its static files need no token (they hold no data); the API behind them does."""
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    path = _route_path(scope)
    return path in ("", "/") or path.startswith(STATIC_PREFIX)


def _route_path(scope: dict[str, Any]) -> str:
    # Behind a proxy that strips a path prefix, uvicorn's root_path is prepended to the path.
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def mount_console(app: Any, connection: Connections) -> None:
    from fastapi import Body, Query
    from fastapi.responses import FileResponse, Response
    from fastapi.staticfiles import StaticFiles

    console = Console(connection)
    app.mount(STATIC_PREFIX.rstrip("/"), StaticFiles(directory=STATIC), name="console-static")

    @app.get("/", include_in_schema=False)
    def page() -> Any:
        return FileResponse(STATIC / "index.html", headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY})

    @app.get("/console/api/tutors")
    def tutors() -> dict[str, Any]:
        return console.tutors()

    @app.get("/console/api/documents")
    def documents() -> dict[str, Any]:
        return console.documents()

    @app.get("/console/api/search")
    def search(q: str = "", limit: int = Query(5), mode: str = "dense") -> dict[str, Any]:
        return console.search(q, limit, mode)

    @app.get("/console/api/datasets")
    def datasets() -> dict[str, Any]:
        return console.datasets()

    @app.get("/console/api/datasets/{name}")
    def dataset(name: str, version: str = "") -> dict[str, Any]:
        return console.dataset(name, version)

    @app.get("/console/api/jobs")
    def jobs() -> dict[str, Any]:
        return console.jobs()

    @app.get("/console/api/jobs/{job_id}")
    def job(job_id: str) -> dict[str, Any]:
        return console.job(job_id)

    @app.get("/console/api/adapters")
    def adapters() -> dict[str, Any]:
        return console.adapters()

    @app.post("/console/api/adapters/{name}/load")
    def load(name: str, version: str = Body("", embed=True)) -> dict[str, Any]:
        return console.load_adapter(name, version)

    @app.post("/console/api/adapters/{name}/unload")
    def unload(name: str) -> dict[str, Any]:
        return console.unload_adapter(name)

    @app.get("/console/api/evaluations/{evaluation_id}")
    def evaluation(evaluation_id: str) -> dict[str, Any]:
        return console.evaluation(evaluation_id)

    @app.get("/console/api/evaluations/{evaluation_id}/files/{path:path}")
    def evaluation_file(evaluation_id: str, path: str) -> Any:
        media = "image/png" if path.endswith(".png") else "text/plain; charset=utf-8"
        return Response(console.evaluation_file(evaluation_id, path), media_type=media)

"""The gateway as ``feedbackflow api`` serves it, plus one no-op route: the ceiling of the same
server (uvicorn, FastAPI, the middleware) under the same load.  ``python -m bench.gateway_server``
reads the usual ``FEEDBACKFLOW_*`` environment."""

from __future__ import annotations

import uvicorn
from fastapi import Request, Response

from ingest.gateway.app import gateway_app
from ingest.gateway.server import build_parts, uvicorn_config
from ingest.metrics.registry import load_registry
from workers.settings import Settings


def main() -> None:
    settings = Settings.load()
    registry = load_registry(settings.config)
    app = gateway_app(build_parts(settings, registry))

    @app.post("/noop", include_in_schema=False)
    async def noop(request: Request) -> Response:
        await request.body()
        return Response(b'{"ok":true}', media_type="application/json")

    uvicorn.Server(uvicorn_config(settings, registry, app)).run()


if __name__ == "__main__":
    main()

"""The image's HEALTHCHECK: exit 0 when ``/health`` on this container answers 200, else 1.

Standard library only: it runs every few seconds, and importing the settings (pydantic) each time
would cost more than the check.  The port is the first argument (the gateway's container passes
its own), else ``FEEDBACKFLOW_HTTP_PORT`` as the worker reads it, else the worker's default.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

WORKER_DEFAULT_PORT = 8000  # workers.settings.Settings.http_port; a test keeps them equal


def health_url(argv: list[str], environ: dict[str, str]) -> str:
    port = argv[1] if len(argv) > 1 else environ.get("FEEDBACKFLOW_HTTP_PORT") or ""
    return f"http://127.0.0.1:{int(port or WORKER_DEFAULT_PORT)}/health"


def main() -> int:
    url = health_url(sys.argv, dict(os.environ))
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - fixed http URL
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Start the gateway: ``python -m api`` (honours HOST and PORT)."""

from __future__ import annotations

import uvicorn

from shared.logs import configure_logging, uvicorn_log_config
from shared.settings import get_settings


def main() -> None:
    settings = get_settings()
    configure_logging(settings.log_format)
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level="info",
        log_config=uvicorn_log_config(settings.log_format),
        # The gateway writes its own line per request (api/metrics.py), with more in it.
        access_log=False,
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()

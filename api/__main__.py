"""Start the gateway: ``python -m api`` (honours HOST and PORT)."""

from __future__ import annotations

import uvicorn

from shared.settings import get_settings


def main() -> None:
    settings = get_settings()
    uvicorn.run(
        "api.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()

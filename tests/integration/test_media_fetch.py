"""The worker's downloader against a real local HTTP server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.media import ConnectionRecorder, MediaServer, Route, image_bytes
from tests.processes import free_port, wait_until
from worker.media.errors import MediaError
from worker.media.fetch import Fetcher, FetchLimits
from worker.media.network import HostPolicy

LIMITS = FetchLimits(max_bytes=100_000, limit_name="MAX_IMAGE_BYTES", timeout_seconds=5)
PNG = image_bytes((32, 32))


@pytest.fixture(scope="module")
def server() -> Iterator[MediaServer]:
    local = MediaServer()
    yield local
    local.stop()


@pytest.fixture
def fetcher() -> Iterator[Fetcher]:
    allowed = Fetcher(HostPolicy.from_hosts(["127.0.0.1"]))
    yield allowed
    allowed.close()


def fetch_error(fetcher: Fetcher, url: str, limits: FetchLimits = LIMITS) -> MediaError:
    with pytest.raises(MediaError) as raised:
        fetcher.fetch(url, "image", limits)
    return raised.value


def test_fetches_from_an_allowed_host(server: MediaServer, fetcher: Fetcher) -> None:
    url = server.serve("/ok.png", Route(PNG, "image/png"))
    assert fetcher.fetch(url, "image", LIMITS) == PNG


def test_loopback_is_refused_unless_allowed(server: MediaServer) -> None:
    url = server.serve("/private.png", Route(PNG, "image/png"))
    strict = Fetcher(HostPolicy.from_hosts([]))
    try:
        error = fetch_error(strict, url)
    finally:
        strict.close()
    assert error.code == "media_url_forbidden"
    assert "ALLOWED_MEDIA_HOSTS" in str(error)
    assert "/private.png" not in server.requests  # refused before connecting


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/a.png",
        "http://[::1]:9/a.png",
        "http://0.0.0.0/",
    ],
)
def test_internal_addresses_are_refused(fetcher: Fetcher, url: str) -> None:
    started = time.monotonic()
    assert fetch_error(fetcher, url).code == "media_url_forbidden"
    assert time.monotonic() - started < 2


def test_redirects_are_followed_and_each_hop_checked(server: MediaServer, fetcher: Fetcher) -> None:
    server.serve("/final.png", Route(PNG, "image/png"))
    server.serve("/hop2", Route(status=302, headers={"Location": "/final.png"}))
    first = server.serve("/hop1", Route(status=301, headers={"Location": server.url("/hop2")}))
    assert fetcher.fetch(first, "image", LIMITS) == PNG

    to_metadata = server.serve(
        "/to-metadata", Route(status=302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
    )
    assert fetch_error(fetcher, to_metadata).code == "media_url_forbidden"
    to_file = server.serve("/to-file", Route(status=307, headers={"Location": "file:///etc/passwd"}))
    assert fetch_error(fetcher, to_file).code == "media_url_forbidden"
    loop = server.serve("/loop", Route(status=302, headers={"Location": "/loop"}))
    assert "redirects more than" in str(fetch_error(fetcher, loop))


def test_non_media_content_is_refused(server: MediaServer, fetcher: Fetcher) -> None:
    page = server.serve("/page", Route(b"<html></html>", "text/html; charset=utf-8"))
    error = fetch_error(fetcher, page)
    assert error.code == "unsupported_media_type" and "text/html" in str(error)
    unlabelled = server.serve("/unlabelled", Route(PNG, None))
    assert fetcher.fetch(unlabelled, "image", LIMITS) == PNG


def test_http_errors_are_reported(server: MediaServer, fetcher: Fetcher) -> None:
    error = fetch_error(fetcher, server.url("/missing.png"))
    assert error.code == "media_fetch_failed" and "404" in str(error)


@pytest.mark.parametrize("chunked", [False, True])
def test_the_byte_limit_holds_while_streaming(server: MediaServer, fetcher: Fetcher, chunked: bool) -> None:
    url = server.serve(f"/big-{chunked}", Route(bytes(300_000), "image/png", chunked=chunked))
    error = fetch_error(fetcher, url)
    assert error.code == "media_too_large" and "MAX_IMAGE_BYTES" in str(error)


def test_a_slow_host_fails_within_the_timeout(server: MediaServer, fetcher: Fetcher) -> None:
    url = server.serve("/slow.png", Route(PNG, "image/png", delay=10))
    started = time.monotonic()
    error = fetch_error(fetcher, url, FetchLimits(100_000, "MAX_IMAGE_BYTES", timeout_seconds=0.5))
    assert time.monotonic() - started < 2
    assert error.code == "media_fetch_failed" and "MEDIA_FETCH_TIMEOUT_SECONDS" in str(error)


def test_an_unreachable_host_fails_fast(fetcher: Fetcher) -> None:
    error = fetch_error(fetcher, f"http://127.0.0.1:{free_port()}/closed.png")
    assert error.code == "media_fetch_failed"


def test_slow_urls_do_not_make_other_downloads_wait_for_a_connection() -> None:
    # More downloads at once than httpcore's default pool of 10: each gets its connection
    # while the others still wait for their answers.
    silent = ConnectionRecorder()
    fetcher = Fetcher(HostPolicy.from_hosts(["127.0.0.1"]), max_connections=16)
    patient = FetchLimits(100_000, "MAX_IMAGE_BYTES", timeout_seconds=60)
    try:
        with ThreadPoolExecutor(16) as pool:
            for n in range(16):
                pool.submit(fetch_error, fetcher, silent.url(f"/{n}.png"), patient)
            try:
                wait_until(lambda: silent.connections == 16, 20, "all 16 downloads to connect")
            finally:
                silent.stop()  # closes the connections: the downloads fail and the pool ends
    finally:
        fetcher.close()

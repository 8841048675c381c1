"""Downloads a media URL within a deadline and a byte limit, following redirects by hand."""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

from shared.media_types import MediaKind, accepts, essence
from worker.media.errors import MediaError
from worker.media.network import BlockedAddress, GuardedTransport, HostPolicy

MAX_REDIRECTS = 5
CHUNK_BYTES = 64 * 1024
USER_AGENT = "qwen3-vl-serving media fetcher"


@dataclass(frozen=True)
class FetchLimits:
    max_bytes: int
    limit_name: str  # the setting behind max_bytes, named in errors
    timeout_seconds: float


@dataclass(frozen=True)
class Deadline:
    at: float  # time.monotonic()
    seconds: float  # how long it was set for, and by which setting: for the error
    setting: str

    @classmethod
    def after(cls, seconds: float, setting: str) -> Deadline:
        return cls(time.monotonic() + seconds, seconds, setting)


class Fetcher:
    """One HTTP client for the worker's lifetime; every connection goes through the policy."""

    def __init__(self, policy: HostPolicy, max_connections: int = 100) -> None:
        # httpcore's default pool holds 10 connections: past that, downloads wait for each
        # other, and a few URLs that never answer would stall every other media request.
        self._client = httpx.Client(
            transport=GuardedTransport(policy, max_connections),
            follow_redirects=False,
            trust_env=False,
            # identity: a compressed body could expand past the byte limit before it is counted.
            headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
        )

    def close(self) -> None:
        self._client.close()

    def fetch(
        self, url: str, kind: MediaKind, limits: FetchLimits, request_deadline: Deadline | None = None
    ) -> bytes:
        """The body, within the URL's own time and ``request_deadline`` (all of a request's URLs)."""
        own = Deadline.after(limits.timeout_seconds, "MEDIA_FETCH_TIMEOUT_SECONDS")
        limit = request_deadline if request_deadline is not None and request_deadline.at < own.at else own
        deadline = limit.at
        try:
            hop = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise MediaError(f"the {kind} URL is not valid: {error}", "invalid_media_url") from error
        # Redirects are followed here, one hop at a time, so that each is checked like the first.
        for redirects in range(MAX_REDIRECTS + 1):
            if hop.scheme not in ("http", "https"):
                raise MediaError(f"the {kind} URL redirects to a non-http(s) URL.", "media_url_forbidden")
            try:
                answer = self._get(hop, kind, limits, deadline)
            except BlockedAddress as error:
                via = " (through a redirect)" if redirects else ""
                raise MediaError(
                    f"the {kind} URL is refused{via}: {error}. "
                    "Such hosts must be listed in ALLOWED_MEDIA_HOSTS.",
                    "media_url_forbidden",
                ) from error
            except httpx.TimeoutException as error:
                raise MediaError(
                    f"fetching the {kind} timed out after {limit.seconds:g} s ({limit.setting}).",
                    "media_fetch_failed",
                ) from error
            except httpx.HTTPError as error:
                raise MediaError(
                    f"the {kind} could not be fetched from {hop.host}: {error}", "media_fetch_failed"
                ) from error
            if isinstance(answer, bytes):
                return answer
            hop = answer
        raise MediaError(f"the {kind} URL redirects more than {MAX_REDIRECTS} times.", "media_fetch_failed")

    def _get(
        self, url: httpx.URL, kind: MediaKind, limits: FetchLimits, deadline: float
    ) -> bytes | httpx.URL:
        """The body, or where a redirect points."""
        timeout = httpx.Timeout(max(0.001, deadline - time.monotonic()))
        with self._client.stream("GET", url, timeout=timeout) as response:
            if response.is_redirect and response.next_request is not None:
                return response.next_request.url
            _check_response(response, kind, limits)
            return _read_within(response, limits, deadline, kind)


def _check_response(response: httpx.Response, kind: MediaKind, limits: FetchLimits) -> None:
    if response.status_code != 200:
        raise MediaError(f"the {kind} URL answered HTTP {response.status_code}.", "media_fetch_failed")
    content_type = response.headers.get("content-type", "")
    if not accepts(kind, content_type):
        article = "an" if kind == "image" else "a"
        raise MediaError(
            f"the {kind} URL serves '{essence(content_type)}', not {article} {kind}.",
            "unsupported_media_type",
        )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limits.max_bytes:
        raise _too_large(kind, limits)


def _read_within(response: httpx.Response, limits: FetchLimits, deadline: float, kind: MediaKind) -> bytes:
    body = bytearray()
    for chunk in response.iter_bytes(CHUNK_BYTES):
        body += chunk
        if len(body) > limits.max_bytes:
            raise _too_large(kind, limits)
        # httpx's timeouts are per read: a server trickling bytes must not outlast the deadline.
        if time.monotonic() > deadline:
            raise httpx.ReadTimeout("the download did not finish in time")
    return bytes(body)


def _too_large(kind: MediaKind, limits: FetchLimits) -> MediaError:
    return MediaError(
        f"the {kind} is larger than {limits.max_bytes} bytes ({limits.limit_name}).", "media_too_large"
    )

"""With API keys set, a request without a valid key is refused before its body is read."""

from __future__ import annotations

import http.client
import json
import socket

from tests.conftest import StackFactory

DECLARED_BODY_BYTES = 32 * 1024 * 1024  # the most MAX_REQUEST_BODY_BYTES allows by default


def send_headers_only(port: int, authorization: str | None) -> tuple[int, dict[str, object], str | None]:
    """POST a chat completion declaring a 32 MiB body, send none of it, and read the answer.

    A gateway that read (or waited for) the body before checking the key would never
    answer: the read below would time out.
    """
    lines = [
        "POST /v1/chat/completions HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {DECLARED_BODY_BYTES}",
    ]
    if authorization is not None:
        lines.append(f"Authorization: {authorization}")
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = json.loads(response.read())
        return response.status, body, response.getheader("connection")


def test_a_large_body_without_a_valid_key_is_refused_unread(make_stack: StackFactory) -> None:
    private = make_stack(workers=0, API_KEYS="key-a")
    for authorization in (None, "Bearer wrong-key", "Basic key-a"):
        status, body, connection = send_headers_only(private.gateway.port, authorization)
        assert status == 401, authorization
        assert set(body) == {"error"}
        error = body["error"]
        assert isinstance(error, dict)
        assert error["type"] == "authentication_error"
        assert error["code"] == "invalid_api_key"
        # The unread body is never drained: the connection is closed instead.
        assert connection == "close"

"""The 64 KiB body limit holds for both encodings: a longer body is a 413, never cut short.

A chunked body has no Content-Length, so the limit can only be enforced while
reading it. The Flask test client does not speak chunked encoding, so the same
bodies are also sent over a raw socket to gunicorn running as a real process.
"""

from __future__ import annotations

import io
import socket
from pathlib import Path

import orjson
import pytest

from app import MAX_BODY_BYTES, keys
from tests.conftest import API_KEY, AUTH, EXPERIMENTS_TOML, poll, rows
from tests.service_processes import running_service

EXTRA = 1600  # bytes past the limit, as in the report of issue 17


SMALL = b'{"experiment":"home_feed","context":{"hour":3}}'


def body_of_size(size: int) -> bytes:
    """A valid /choose body of exactly ``size`` bytes (padded with whitespace)."""
    return SMALL + b" " * (size - len(SMALL))


def over_limit_body() -> bytes:
    """The limit's worth of valid JSON with more bytes after it.

    Cut at the limit, it is a valid body: a server that truncates instead of refusing
    answers 200 and records a decision.
    """
    return body_of_size(MAX_BODY_BYTES) + b"x" * EXTRA


def post_chunked(client, body: bytes):
    # wsgi.input_terminated: what gunicorn sets, meaning "read until the stream ends"
    return client.post(
        "/choose",
        input_stream=io.BytesIO(body),
        headers={**AUTH, "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


def post_sized(client, body: bytes):
    return client.post("/choose", data=body, headers={**AUTH, "Content-Type": "application/json"})


def stream_length(redis_client) -> int:
    return redis_client.xlen(keys.stream("home_feed"))


@pytest.mark.parametrize("send", [post_sized, post_chunked], ids=["content-length", "chunked"])
def test_body_at_the_limit_is_accepted(client, send):
    body = body_of_size(MAX_BODY_BYTES)
    assert len(body) == MAX_BODY_BYTES
    assert send(client, body).status_code == 200


@pytest.mark.parametrize("send", [post_sized, post_chunked], ids=["content-length", "chunked"])
@pytest.mark.parametrize(
    "body", [body_of_size(MAX_BODY_BYTES + 1), over_limit_body()], ids=["limit+1", "limit+1600"]
)
def test_body_over_the_limit_returns_413_and_records_nothing(client, redis_client, send, body):
    response = send(client, body)
    assert response.status_code == 413, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "request_entity_too_large"
    assert stream_length(redis_client) == 0


# -- against gunicorn -------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path, engine, redis_client, request):
    with running_service(EXPERIMENTS_TOML, tmp_path, request) as svc:
        yield svc


def raw_post(base_url: str, body: bytes, *, chunked: bool, chunk: int = 4096) -> tuple[int, bytes]:
    """POST /choose over a plain socket; returns the status and the response body."""
    host, port = base_url.removeprefix("http://").split(":")
    head = (
        f"POST /choose HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {API_KEY}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n"
    )
    if chunked:
        parts = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
        head += "Transfer-Encoding: chunked\r\n\r\n"
    else:
        payload = body
        head += f"Content-Length: {len(body)}\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        try:
            sock.sendall(head.encode() + payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer 413 and close before reading everything
        response = b""
        while chunk_in := sock.recv(65536):
            response += chunk_in
    status_line, _, rest = response.partition(b"\r\n")
    _, _, content = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), content


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_gunicorn_refuses_a_body_over_the_limit_with_413(service, redis_client, engine, chunked):
    status, content = raw_post(service.base_url, over_limit_body(), chunked=chunked)
    assert status == 413, content
    assert orjson.loads(content)["error"]["code"] == "request_entity_too_large"

    # a body at the limit still gets through, and only it reaches the log
    status, content = raw_post(service.base_url, body_of_size(MAX_BODY_BYTES), chunked=chunked)
    assert status == 200, content
    decision_id = orjson.loads(content)["decision_id"]
    logged = poll(lambda: rows(engine, "SELECT decision_id, request_id FROM decisions"))
    assert [r["decision_id"] for r in logged] == [decision_id]


def raw_request(base_url: str, head: bytes) -> tuple[int, bytes, bytes]:
    """Send ``head`` (a request without a body) over a plain socket; status, headers, body."""
    host, port = base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        response = b""
        while chunk_in := sock.recv(65536):
            response += chunk_in
    status_line, _, rest = response.partition(b"\r\n")
    headers, _, content = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), headers, content


@pytest.mark.parametrize(
    "head, status, code",
    [
        (b"GET /healthz?" + b"a" * 5000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        (
            b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: y\r\n" * 120 + b"\r\n",
            431,
            "request_header_fields_too_large",
        ),
        (b"GET /healthz HTTP/1.1\r\nHost x\r\n\r\n", 400, "bad_request"),
    ],
    ids=["request-line-too-long", "too-many-headers", "malformed-header"],
)
def test_what_gunicorn_refuses_before_the_app_is_a_json_error_too(service, head, status, code):
    got, headers, content = raw_request(service.base_url, head)
    assert got == status, content
    assert b"content-type: application/json" in headers.lower()
    error = orjson.loads(content)["error"]
    assert error["code"] == code and error["message"]

"""hardening #12: the sign-in HTTP path caps what it reads, like the Graph path does."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from bulk_assign.auth.http import MAX_BODY, msal_http_client


@pytest.fixture
def token_endpoint() -> Iterator[str]:
    """/small answers a token; /huge streams far more than any sign-in answer."""

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if self.path == "/small":
                body = b'{"access_token": "x", "expires_in": 3600}'
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_header("Content-Length", str(64 * MAX_BODY))
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b" " * MAX_BODY)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_normal_answer_reads_as_before(token_endpoint: str) -> None:
    answer = msal_http_client().post(token_endpoint + "/small", data={"grant_type": "x"})
    assert answer.status_code == 200 and answer.json()["access_token"] == "x"


def test_an_oversized_answer_is_refused_not_read_whole(token_endpoint: str) -> None:
    with pytest.raises(requests.exceptions.ConnectionError, match="larger than"):
        msal_http_client().post(token_endpoint + "/huge", data={"grant_type": "x"})

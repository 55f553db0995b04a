"""`python -m chatplatform.run`: the health probe reaches the server however it is bound, and a
reply that is not the health JSON means "not healthy yet", never a crash."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.test import Client

from chatplatform.run import Platform, allowed_hosts_for

BAD_HOST_PAGE = b"<!doctype html><title>Bad Request (400)</title><h1>Bad Request (400)</h1>"


class HealthServer:
    """A real HTTP server on a free port answering /healthz from a list of replies (the last
    one repeats)."""

    def __init__(self, replies: list[tuple[int, bytes]]) -> None:
        self.replies = replies
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                status, body = server.replies[min(server.requests, len(server.replies) - 1)]
                server.requests += 1
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def health_server(request: pytest.FixtureRequest) -> Iterator[HealthServer]:
    server = HealthServer(request.param)
    yield server
    server.close()


OK = (200, json.dumps({"status": "ok", "checks": {}}).encode())
STARTING = (503, json.dumps({"status": "degraded", "checks": {}}).encode())


@pytest.mark.parametrize("health_server", [[(400, BAD_HOST_PAGE), STARTING, OK]], indirect=True)
def test_non_json_reply_is_not_healthy_yet(health_server: HealthServer) -> None:
    # given: a server bound to every address that first answers an HTML 400 page
    platform = Platform(host="0.0.0.0", port=health_server.port)
    # when / then: the probe goes to loopback and waits through the HTML and the 503
    assert platform.health_url == f"http://127.0.0.1:{health_server.port}/healthz"
    assert platform.wait_healthy(timeout_s=30)["status"] == "ok"
    assert health_server.requests == 3


@pytest.mark.parametrize("health_server", [[(400, BAD_HOST_PAGE)]], indirect=True)
def test_a_persistent_non_json_reply_fails_with_the_body(health_server: HealthServer) -> None:
    platform = Platform(host="127.0.0.1", port=health_server.port)
    with pytest.raises(RuntimeError, match=r"HTTP 400, not the health JSON: <!doctype html>"):
        platform.wait_healthy(timeout_s=2)


@pytest.mark.django_db
def test_run_on_every_address_allows_its_own_probe(
    monkeypatch: pytest.MonkeyPatch, settings
) -> None:
    # given: HOST=0.0.0.0 and no ALLOWED_HOSTS in the environment
    monkeypatch.delenv("ALLOWED_HOSTS", raising=False)
    platform = Platform(host="0.0.0.0", port=8000)
    # when
    platform.allow_own_host()
    # then: Django with those hosts serves the probe's Host (503: no workers here, not 400)

    settings.ALLOWED_HOSTS = os.environ["ALLOWED_HOSTS"].split(",")
    assert Client().get("/healthz", HTTP_HOST="127.0.0.1:8000").status_code == 503
    assert Client().get("/healthz", HTTP_HOST="localhost:8000").status_code == 503


def test_explicit_allowed_hosts_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALLOWED_HOSTS", "chat.example.com")
    Platform(host="0.0.0.0", port=8000).allow_own_host()

    assert os.environ["ALLOWED_HOSTS"] == "chat.example.com"


def test_allowed_hosts_for_ipv6_wildcard() -> None:
    assert allowed_hosts_for("::") == ["127.0.0.1", "localhost", "[::]", "[::1]"]
    assert Platform(host="::", port=8000).health_url == "http://[::1]:8000/healthz"

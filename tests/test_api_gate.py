"""The access gate in front of the job API, alone (Starlette's TestClient): only exact open paths are open."""

from __future__ import annotations

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from storyteller_ui.access import TokenGate


def _reached(request):  # type: ignore[no-untyped-def]
    return PlainTextResponse("reached")


@pytest.fixture
def client() -> TestClient:
    app = Starlette(
        routes=[Route("/{rest:path}", _reached, methods=["GET", "POST"])],
        middleware=[Middleware(TokenGate, token="T0KEN", hosts=frozenset({"testserver"}))],
    )
    return TestClient(app)


@pytest.mark.parametrize(
    "path", ["/api/v1/batches/_stcore/health", "/api/v1/presets/_stcore/health", "/api/v1/x/health", "/x/_stcore/health"]
)
def test_a_path_that_only_ends_like_an_open_one_needs_the_token(client: TestClient, path: str) -> None:
    answer = client.post(path) if "batches" in path else client.get(path)
    assert answer.status_code in (401, 403) and answer.text != "reached", (path, answer.status_code)


def test_the_open_paths_and_a_bearer_token_reach_the_app(client: TestClient) -> None:
    assert client.get("/_stcore/health").text == "reached"
    assert client.get("/health").text == "reached"
    assert client.get("/api/v1/presets", headers={"Authorization": "Bearer T0KEN"}).text == "reached"
    assert client.get("/api/v1/presets", headers={"Authorization": "Bearer wrong"}).status_code == 401

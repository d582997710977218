"""Every route but health needs a valid API key."""

import pytest

ROUTES = [("post", "/choose"), ("post", "/reward"), ("get", "/experiments")]


@pytest.mark.parametrize("method, path", ROUTES)
def test_missing_key_returns_401(client, method, path):
    response = getattr(client, method)(path, json={})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("method, path", ROUTES)
def test_wrong_key_returns_401(client, method, path):
    response = getattr(client, method)(path, json={}, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401


def test_non_bearer_scheme_returns_401(client):
    response = client.get("/experiments", headers={"Authorization": "Basic dGVzdC1rZXk="})
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_needs_no_key(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.get_json()["status"] in ("ok", "ready")


def test_any_configured_key_is_accepted(settings):
    from dataclasses import replace

    from app import create_app

    client = create_app(replace(settings, api_keys=frozenset({"one", "two"}))).test_client()
    for key in ("one", "two"):
        assert (
            client.get("/experiments", headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )

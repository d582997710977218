"""Every route but health needs a valid API key, used within its scope; keys stay out of logs."""

import logging

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
    assert response.get_json()["status"] in ("ok", "ready", "degraded")  # no worker runs here


def test_any_configured_key_is_accepted(settings):
    from dataclasses import replace

    from app import create_app

    client = create_app(replace(settings, api_keys=frozenset({"one", "two"}))).test_client()
    for key in ("one", "two"):
        assert (
            client.get("/experiments", headers={"Authorization": f"Bearer {key}"}).status_code
            == 200
        )


# Scoped keys: BANDITD_API_KEYS entries "KEY=EXPERIMENTS:ACTIONS+...".


def scoped_client(settings, *entries: str):
    from dataclasses import replace

    from app import create_app

    return create_app(replace(settings, api_keys=frozenset(entries))).test_client()


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def post_choose(client, key: str, experiment: str = "home_feed"):
    return client.post("/choose", json={"experiment": experiment}, headers=bearer(key))


def post_reward(client, key: str, decision_id: str, arm: str):
    body = {"decision_id": decision_id, "arm": arm, "reward": 1.0}
    return client.post("/reward", json=body, headers=bearer(key))


def assert_forbidden(response):
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "forbidden"


def test_key_scoped_to_an_experiment_chooses_and_rewards_only_there(settings):
    client = scoped_client(settings, "admin", "feed=home_feed:choose|reward")
    decision = post_choose(client, "feed").get_json()
    assert decision["decision_id"].startswith("home_feed:")
    assert (
        post_reward(client, "feed", decision["decision_id"], decision["arms"][0]["arm"]).status_code
        == 202
    )
    assert_forbidden(post_choose(client, "feed", "push_copy"))
    other = post_choose(client, "admin", "push_copy").get_json()
    assert_forbidden(post_reward(client, "feed", other["decision_id"], other["arms"][0]["arm"]))


def test_key_scoped_to_one_action_is_refused_the_other(settings):
    client = scoped_client(settings, "chooser=*:choose", "rewarder=*:reward")
    decision = post_choose(client, "chooser", "push_copy").get_json()
    arm = decision["arms"][0]["arm"]
    assert_forbidden(post_reward(client, "chooser", decision["decision_id"], arm))
    assert_forbidden(post_choose(client, "rewarder"))
    assert post_reward(client, "rewarder", decision["decision_id"], arm).status_code == 202


def test_out_of_scope_key_is_refused_on_every_protected_route(settings):
    client = scoped_client(settings, "narrow=push_copy:choose")
    assert_forbidden(post_choose(client, "narrow", "home_feed"))
    assert_forbidden(post_reward(client, "narrow", "home_feed:0123", "job_kitchen"))
    assert_forbidden(client.get("/experiments", headers=bearer("narrow")))


def test_out_of_scope_key_cannot_learn_whether_an_experiment_exists(settings):
    client = scoped_client(settings, "narrow=home_feed:*")
    assert_forbidden(post_choose(client, "narrow", "no_such_experiment"))
    assert_forbidden(post_reward(client, "narrow", "not-one-of-ours", "job_kitchen"))


def test_listing_experiments_needs_read_on_every_experiment(settings):
    client = scoped_client(settings, "reader=*:read", "feed_reader=home_feed:read", "all=*:*")
    assert client.get("/experiments", headers=bearer("reader")).status_code == 200
    assert client.get("/experiments", headers=bearer("all")).status_code == 200
    assert_forbidden(client.get("/experiments", headers=bearer("feed_reader")))


def test_several_entries_for_one_key_add_up(settings):
    client = scoped_client(settings, "k=home_feed:choose", "k=push_copy:choose")
    assert post_choose(client, "k", "home_feed").status_code == 200
    assert post_choose(client, "k", "push_copy").status_code == 200


def test_scope_suffix_does_not_make_a_shorter_key_valid(settings):
    client = scoped_client(settings, "secret=home_feed:choose")
    for wrong in ("secret=home_feed:choose", "secre", "secret="):
        assert post_choose(client, wrong).status_code == 401


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json"])
def test_public_routes_need_no_key_even_with_only_scoped_keys(settings, path):
    assert scoped_client(settings, "k=home_feed:choose").get(path).status_code == 200


def test_api_keys_syntax_from_the_environment():
    from app.settings import Settings, key_digest

    settings = Settings.from_env(
        {"BANDITD_API_KEYS": " plain , padded== ,scoped==a|b:choose+*:reward, both=*:* "}
    )
    keys = {k.digest: k for k in settings.parsed_api_keys()}
    assert keys[key_digest("plain")].grants is None
    assert keys[key_digest("padded==")].grants is None
    scoped = keys[key_digest("scoped=")]
    assert scoped.allows("choose", "a") and scoped.allows("choose", "b")
    assert not scoped.allows("choose", "c")
    assert scoped.allows("reward", "c") and scoped.allows("reward", None)
    assert not scoped.allows("read", None)
    assert keys[key_digest("both")].allows("read", None)


@pytest.mark.parametrize(
    "entry",
    [
        "s3cr3t=home_feed",
        "s3cr3t=home_feed:approve",
        "s3cr3t=:choose",
        "=home_feed:choose",
        "s3cr3t=a b:choose",
    ],
)
def test_malformed_scope_is_refused_at_start_without_quoting_the_key(entry):
    from app.settings import Settings

    with pytest.raises(ValueError) as caught:
        Settings.from_env({"BANDITD_API_KEYS": f"ok,{entry}"})
    assert "entry 2" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)


def test_settings_repr_does_not_show_keys(settings):
    assert "test-key" not in repr(settings)
    assert "test-key" not in repr(settings.parsed_api_keys())


def test_key_never_appears_in_the_app_log(app, client, caplog):
    def explode(_req):
        raise RuntimeError("boom")

    with caplog.at_level(logging.DEBUG):
        client.get("/experiments", headers=bearer("test-key"))
        client.get("/experiments", headers=bearer("wrong-key-123"))
        client.get("/experiments", headers={"Authorization": "Basic dGVzdC1rZXk6"})
        app.extensions["banditd"].chooser.choose = explode
        assert (
            client.post(
                "/choose", json={"experiment": "home_feed"}, headers=bearer("test-key")
            ).status_code
            == 500
        )
    assert "unhandled error" in caplog.text  # the log was captured
    for secret in ("test-key", "wrong-key-123", "dGVzdC1rZXk6"):
        assert secret not in caplog.text


def test_gunicorn_default_access_log_line_has_no_bearer_key():
    from datetime import timedelta
    from types import SimpleNamespace

    from gunicorn.config import Config
    from gunicorn.glogging import Logger

    logger = Logger(Config())
    environ = {
        "REQUEST_METHOD": "POST",
        "RAW_URI": "/choose",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_AUTHORIZATION": "Bearer test-key",
    }
    request = SimpleNamespace(headers=[("AUTHORIZATION", "Bearer test-key")])
    response = SimpleNamespace(status="200 OK", sent=10, headers=[])
    atoms = logger.atoms(response, request, environ, timedelta(milliseconds=3))
    line = Config().access_log_format % atoms
    assert "/choose" in line
    assert "test-key" not in line


def test_match_key_finds_the_presented_key_only():
    from app.auth import match_key
    from app.settings import parse_api_keys

    keys = parse_api_keys(["alpha", "beta=home_feed:choose"])
    assert match_key("alpha", keys) is keys[0]
    assert match_key("beta", keys) is keys[1]
    for wrong in ("alph", "alphaa", "", "beta=home_feed:choose"):
        assert match_key(wrong, keys) is None

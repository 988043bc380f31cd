"""The catalogue: /v1/models and /v1/pricing from configuration, operator overrides."""

from decimal import Decimal

import pytest

SEED = {  # the seed document's table
    "deepseek-chat": ("DeepSeek", 0.14, 0.28), "deepseek-reasoner": ("DeepSeek", 0.55, 2.19),
    "ark-code-latest": ("Volcengine", 0.11, 0.43),
    "doubao-seed-2.0-pro": ("Volcengine", 0.11, 0.43),
    "mimo-v2.5": ("Xiaomi", 0.10, 0.30), "mimo-v2.5-pro": ("Xiaomi", 0.10, 0.30),
}


def test_models_list_is_openai_shaped(client, accounts):
    acct = accounts.make()
    body = client.get("/v1/models", headers=acct.headers).json
    assert body["object"] == "list"
    assert {m["id"]: m["owned_by"] for m in body["data"]} == {
        k: v[0] for k, v in SEED.items()}
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in body["data"])


def test_one_model(client, accounts):
    acct = accounts.make()
    assert client.get("/v1/models/mimo-v2.5", headers=acct.headers).json["owned_by"] == "Xiaomi"
    assert client.get("/v1/models/nope", headers=acct.headers).status_code == 404


def test_pricing_needs_no_key_and_matches_the_seed(client):
    body = client.get("/v1/pricing").json
    assert body["currency"] == "USD"
    assert {m["id"]: (m["provider"], m["input"], m["output"]) for m in body["models"]} == SEED
    tiers = {t["name"]: (t["discount_percent"], t["monthly_free_tokens"]) for t in body["tiers"]}
    assert tiers == {"free": (0, 100_000), "pro": (10, 1_000_000), "team": (20, 5_000_000)}


def test_operator_overrides_models_and_tiers(database_url, upstream, monkeypatch):
    from silk import create_app

    monkeypatch.delenv("MIMO_API_KEY", raising=False)
    models = {"house-model": {"provider": "mimo", "upstream": "mimo-v2.5", "input": "1.5",
                              "output": "3", "max_output_tokens": 100, "cache_hit": "0.5"}}
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "SILK_MODELS": models,
                      "SILK_TIERS": {"free": {"discount_percent": "5",
                                              "monthly_free_tokens": 7}}})
    body = app.test_client().get("/v1/pricing").json
    assert body["models"] == [{"id": "house-model", "provider": "Xiaomi", "input": 1.5,
                               "output": 3.0, "cache_hit_input": 0.5,
                               "unit": "USD per 1M tokens", "available": False}]
    model = app.extensions["silk.catalogue"].model("house-model")
    assert model.price.cache_hit == Decimal("0.5")


@pytest.mark.parametrize("override,fragment", [
    ({"SILK_MODELS": {"m": {"provider": "openai", "input": "1", "output": "1",
                            "max_output_tokens": 5}}}, "provider 'openai'"),
    ({"SILK_MODELS": {"m": {"provider": "mimo", "input": "-1", "output": "1",
                            "max_output_tokens": 5}}}, "input price"),
    ({"SILK_MODELS": {"m": {"provider": "mimo", "input": "1", "output": "x",
                            "max_output_tokens": 5}}}, "output price"),
    ({"SILK_MODELS": {"m": {"provider": "mimo", "input": "1", "output": "1",
                            "max_output_tokens": 0}}}, "max_output_tokens"),
    ({"SILK_TIERS": {"free": {"discount_percent": "120", "monthly_free_tokens": 1}}},
     "discount_percent"),
    ({"SILK_REGISTRATION": "sometimes"}, "SILK_REGISTRATION"),
    ({"SILK_RESPONSES_RETENTION_DAYS": 0}, "SILK_RESPONSES_RETENTION_DAYS"),
    ({"SQLALCHEMY_DATABASE_URI": "not a url"}, "DATABASE_URL"),
    ({"SILK_ALERT_WEBHOOK_URL": "http://["}, "SILK_ALERT_WEBHOOK_URL"),
    ({"SILK_ALERT_WEBHOOK_URL": "ftp://example.com/x"}, "SILK_ALERT_WEBHOOK_URL"),
])
def test_bad_configuration_fails_at_start_naming_the_setting(override, fragment, tmp_path):
    from silk import create_app
    from silk.config import ConfigError

    config = {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db", **override}
    with pytest.raises(ConfigError) as err:
        create_app(config)
    assert fragment in str(err.value)


@pytest.mark.parametrize("value", ["ftp://example", "http://[::1"])
def test_bad_base_url_variable_fails_at_start(monkeypatch, tmp_path, value):
    from silk import create_app
    from silk.config import ConfigError

    monkeypatch.setenv("ARK_BASE_URL", value)
    with pytest.raises(ConfigError, match="ARK_BASE_URL"):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})


def test_provider_variables_and_several_keys(monkeypatch, tmp_path):
    from silk import create_app

    monkeypatch.setenv("DEEPSEEK_API_KEY", "k1, k2 ,k3")
    monkeypatch.setenv("DEEPSEEK_BASE_URL", "http://127.0.0.1:9/ds/")
    monkeypatch.setenv("MIMO_API_KEY", "m1")
    monkeypatch.delenv("ARK_API_KEY", raising=False)
    monkeypatch.delenv("ARK_BASE_URL", raising=False)
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})
    providers = app.extensions["silk.catalogue"].providers
    assert providers["deepseek"].keys == ("k1", "k2", "k3")
    assert providers["deepseek"].base_url == "http://127.0.0.1:9/ds"
    assert providers["ark"].base_url == "https://ark.cn-beijing.volces.com/api/v3"
    assert not providers["ark"].configured
    assert app.extensions["silk.upstreams"]["deepseek"].url == (
        "http://127.0.0.1:9/ds/chat/completions")


def test_database_url_variable_and_postgres_driver(monkeypatch):
    from silk import create_app

    monkeypatch.setenv("DATABASE_URL", "postgresql://u@127.0.0.1:1/x")
    app = create_app()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@127.0.0.1:1/x"


def test_a_provider_without_a_key_is_visible(app, client, accounts, monkeypatch, tmp_path):
    """Its models leave /v1/models, /v1/pricing marks them unavailable, and start-up names
    the variable to set."""
    from silk import create_app
    from silk.startup import provider_warnings

    monkeypatch.delenv("MIMO_API_KEY")
    keyless = create_app({"SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                          "TESTING": True})
    acct = accounts.make()
    listed = {m["id"] for m in keyless.test_client().get("/v1/models",
                                                           headers=acct.headers).json["data"]}
    assert listed == set(SEED) - {"mimo-v2.5", "mimo-v2.5-pro"}
    assert keyless.test_client().get("/v1/models/mimo-v2.5",
                                     headers=acct.headers).status_code == 404
    prices = {m["id"]: m["available"] for m in keyless.test_client().get("/v1/pricing").json[
        "models"]}
    assert prices == {m: not m.startswith("mimo") for m in SEED}
    assert all(m["available"] for m in client.get("/v1/pricing").json["models"])
    warnings = provider_warnings(keyless.config)
    assert len(warnings) == 1 and "set MIMO_API_KEY" in warnings[0]
    assert "mimo-v2.5, mimo-v2.5-pro" in warnings[0]
    assert provider_warnings(app.config) == []


def test_start_up_warns_of_a_routed_model_only_when_no_route_can_serve_it():
    from silk.startup import provider_warnings

    config = {
        "SILK_PROVIDERS": {p: {"name": p.upper(), "env": p.upper()} for p in ("a", "b", "c")},
        "SILK_UPSTREAMS": {"a": {"keys": []}, "b": {"keys": ["k"]}, "c": {"keys": []}},
        "SILK_MODELS": {
            "own": {"provider": "a"},
            "served": {"provider": "a", "routes": [{"provider": "a"}, {"provider": "b"}]},
            "stranded": {"provider": "a", "routes": [{"provider": "a"}, {"provider": "c"}]},
        },
    }
    warnings = provider_warnings(config)
    assert len(warnings) == 2
    assert "set A_API_KEY to serve own, stranded " in warnings[0]
    assert "set C_API_KEY to serve stranded " in warnings[1]

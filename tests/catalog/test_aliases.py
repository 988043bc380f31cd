"""SILK_MODEL_ALIASES: other names (or glob patterns) for catalogue models, on every surface."""

import pytest

from tests.chat.helpers import messages

ALIASES = ('{"claude-opus-*": "deepseek-reasoner", "claude-*": "deepseek-chat", '
           '"gpt-fast": "mimo-v2.5"}')


@pytest.fixture
def aliased(monkeypatch):
    monkeypatch.setenv("SILK_MODEL_ALIASES", ALIASES)


def test_catalogue_resolves_exact_then_patterns_in_order():
    from silk.catalog.catalogue import Catalogue, Model, parse_aliases
    from silk.pricing import Price

    models = {name: Model(id=name, provider="p", upstream=name, price=Price(1, 1),
                          max_output_tokens=1)
              for name in ("deepseek-chat", "deepseek-reasoner", "mimo-v2.5")}
    cat = Catalogue(models=models, providers={}, tiers={}, aliases=parse_aliases(ALIASES))
    assert cat.model("claude-opus-4-1").id == "deepseek-reasoner"
    assert cat.model("claude-sonnet-4-5").id == "deepseek-chat"
    assert cat.model("gpt-fast").id == "mimo-v2.5"
    assert cat.model("deepseek-chat").id == "deepseek-chat"
    assert cat.model("gpt-faster") is None
    assert [name for name, _ in cat.exact_aliases()] == ["gpt-fast"]
    assert parse_aliases("a=deepseek-chat, b*=mimo-v2.5") == (
        ("a", "deepseek-chat"), ("b*", "mimo-v2.5"))


def test_an_alias_is_billed_as_its_target_on_both_surfaces(aliased, client, accounts,
                                                           upstream):
    acct = accounts.make(credit="5")
    chat = client.post("/v1/chat/completions", headers={**acct.headers,
                                                        "Accept": "application/json"},
                       json={"model": "claude-opus-4", "messages": messages()})
    assert chat.status_code == 200, chat.json
    assert upstream.requests[-1].body["thinking"] == {"type": "enabled"}
    message = client.post("/v1/messages", headers=acct.headers, json={
        "model": "claude-haiku-4-5", "max_tokens": 100, "messages": messages()})
    assert message.status_code == 200, message.json
    assert message.json["model"] == "claude-haiku-4-5"
    records = accounts.usage_records(acct.id)
    assert [(r.model, r.surface) for r in records] == [
        ("deepseek-reasoner", "chat"), ("deepseek-chat", "messages")]
    assert accounts.audit() == []


def test_models_list_shows_exact_aliases_when_asked(aliased, app, client, accounts,
                                                    upstream):
    acct = accounts.make(credit="1")
    ids = [m["id"] for m in client.get("/v1/models", headers=acct.headers).json["data"]]
    assert "gpt-fast" not in ids
    app.config["SILK_LIST_ALIASES"] = True
    listed = client.get("/v1/models", headers=acct.headers).json["data"]
    [alias] = [m for m in listed if m["id"] == "gpt-fast"]
    assert alias["alias_of"] == "mimo-v2.5"


@pytest.mark.parametrize("value", ['{"claude-*": "no-such-model"}', "claude-*"])
def test_bad_aliases_fail_at_start(monkeypatch, tmp_path, value):
    from silk import create_app
    from silk.config import ConfigError

    monkeypatch.setenv("SILK_MODEL_ALIASES", value)
    with pytest.raises(ConfigError, match="SILK_MODEL_ALIASES"):
        create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/x.db"})

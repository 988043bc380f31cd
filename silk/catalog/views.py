"""The `models` blueprint: GET /v1/models (key needed) and GET /v1/pricing (public)."""

from flask import Blueprint, current_app, jsonify

from silk.account.auth import authenticate
from silk.billing.tiers import tiers
from silk.catalog import catalogue
from silk.database import utcnow
from silk.errors import NotFound
from silk.schedule import describe

bp = Blueprint("models", __name__, url_prefix="/v1")
_CREATED = 1767225600  # 2026-01-01: a fixed date, as the catalogue is configuration


def _model_object(model, provider) -> dict:
    return {"id": model.id, "object": "model", "created": _CREATED, "owned_by": provider.name}


@bp.get("/models")
def list_models():
    """List the models this key may use and the gateway can serve (their provider has a
    key), in OpenAI's list shape."""
    principal = authenticate()
    cat = catalogue()
    data = [_model_object(m, cat.provider_of(m)) for m in cat.models.values()
            if principal.may_use(m.id) and cat.available(m)]
    if current_app.config["SILK_LIST_ALIASES"]:
        data += [{**_model_object(m, cat.provider_of(m)), "id": name, "alias_of": m.id}
                 for name, m in cat.exact_aliases()
                 if principal.may_use(m.id) and cat.available(m)]
    return jsonify({"object": "list", "data": data})


@bp.get("/models/<path:model_id>")
def get_model(model_id: str):
    """Describe one model the list would show."""
    principal = authenticate()
    cat = catalogue()
    model = cat.model(model_id)
    if model is None or not principal.may_use(model.id) or not cat.available(model):
        raise NotFound(f"The model '{model_id}' does not exist.", param="model",
                       code="model_not_found")
    return jsonify(_model_object(model, cat.provider_of(model)))


@bp.get("/pricing")
def pricing():
    """Every model's price per million tokens, whether it can be served now, and every
    tier; no key needed.

    `input`, `output` (and `cache_hit_input`) are the rates in force now for the shortest
    prompts; a price that varies adds its bands, length tiers and coming versions.
    """
    cat = catalogue()
    now = utcnow()
    models = []
    for model in cat.models.values():
        price = model.price_at(now).steps[0].price
        entry = {"id": model.id, "provider": cat.provider_of(model).name,
                 "input": price.input, "output": price.output, "unit": "USD per 1M tokens",
                 "available": cat.available(model)}
        if price.cache_hit is not None:
            entry["cache_hit_input"] = price.cache_hit
        if model.pricing is not None:
            entry.update(describe(model.pricing, now))
        models.append(entry)
    tier_list = [{"name": t.name, "discount": t.discount,
                  "discount_percent": t.discount * 100,
                  "monthly_free_tokens": t.monthly_free_tokens} for t in tiers().values()]
    return jsonify({"currency": "USD", "models": models, "tiers": tier_list})

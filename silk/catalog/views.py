"""The `models` blueprint: GET /v1/models (key needed) and GET /v1/pricing (public)."""

from flask import Blueprint, current_app, jsonify

from silk.account.auth import authenticate
from silk.billing.tiers import tiers
from silk.catalog import catalogue
from silk.errors import NotFound

bp = Blueprint("models", __name__, url_prefix="/v1")
_CREATED = 1767225600  # 2026-01-01: a fixed date, as the catalogue is configuration


def _model_object(model, provider) -> dict:
    return {"id": model.id, "object": "model", "created": _CREATED, "owned_by": provider.name}


@bp.get("/models")
def list_models():
    """List the models this key may use, in OpenAI's list shape."""
    principal = authenticate()
    cat = catalogue()
    data = [_model_object(m, cat.provider_of(m)) for m in cat.models.values()
            if principal.may_use(m.id)]
    if current_app.config["SILK_LIST_ALIASES"]:
        data += [{**_model_object(m, cat.provider_of(m)), "id": name, "alias_of": m.id}
                 for name, m in cat.exact_aliases() if principal.may_use(m.id)]
    return jsonify({"object": "list", "data": data})


@bp.get("/models/<path:model_id>")
def get_model(model_id: str):
    """Describe one model."""
    principal = authenticate()
    cat = catalogue()
    model = cat.model(model_id)
    if model is None or not principal.may_use(model.id):
        raise NotFound(f"The model '{model_id}' does not exist.", param="model",
                       code="model_not_found")
    return jsonify(_model_object(model, cat.provider_of(model)))


@bp.get("/pricing")
def pricing():
    """Every model's price per million tokens and every tier; no key needed."""
    cat = catalogue()
    models = []
    for model in cat.models.values():
        entry = {"id": model.id, "provider": cat.provider_of(model).name,
                 "input": model.price.input, "output": model.price.output,
                 "unit": "USD per 1M tokens"}
        if model.price.cache_hit is not None:
            entry["cache_hit_input"] = model.price.cache_hit
        models.append(entry)
    tier_list = [{"name": t.name, "discount": t.discount,
                  "discount_percent": t.discount * 100,
                  "monthly_free_tokens": t.monthly_free_tokens} for t in tiers().values()]
    return jsonify({"currency": "USD", "models": models, "tiers": tier_list})

"""Passed-through fields that would make a provider bill what the catalogue does not price or
the gateway cannot count: refused, or not sent where the answer is the same without them.

A chat request's other fields pass through, and an OpenAI-compatible server an operator adds
(OpenRouter, OpenAI itself) may read them. Audio output streams in `delta.audio`, which the
relay does not count, at audio prices the catalogue does not have; OpenRouter's `models`
(with `route`), `provider` and `preset` may answer with another model or provider at its own
price; its `plugins` and OpenAI's `web_search_options` bill per search or page; a
`service_tier` other than the default is priced apart. Each is a 400 naming it, as leaving
it out would change what the client asked for. OpenAI's Predicted Outputs bill the
prediction's rejected tokens as output that is never streamed nor bounded by the limit, and
only speed up the same answer: a `prediction` is not sent.
"""

from __future__ import annotations

from silk.errors import InvalidRequest

_REFUSED = {
    "audio": "audio output is not supported by this gateway: the provider prices it apart "
             "and streams it where the gateway cannot count it",
    "models": "a router's fallback to other models ('models') is not supported by this "
              "gateway: another model would answer at its own price; name one model in "
              "'model'",
    "route": "a router's fallback ('route') is not supported by this gateway: another model "
             "would answer at its own price; name one model in 'model'",
    "provider": "a router's provider preferences ('provider') are not supported by this "
                "gateway: which provider answers sets the price, and the catalogue's route "
                "decides it",
    "preset": "a router's preset ('preset') is not supported by this gateway: it may name "
              "other models, providers or plugins, priced apart",
    "plugins": "a router's plugins ('plugins': web search, file parsing) are not supported "
               "by this gateway: they bill per use, which the catalogue does not price",
    "web_search_options": "web search ('web_search_options') is not supported by this "
                          "gateway: it bills per search, which the catalogue does not price",
}
# The tiers a provider bills at its standard price (OpenAI's and Ark's `auto` and `default`,
# Google's `standard`).
_STANDARD_TIERS = ("auto", "default", "standard")
_WATCHED = frozenset({*_REFUSED, "modalities", "service_tier", "prediction"})


def strip(body: dict) -> None:
    """Refuse, with a 400 naming it, a field that would make the provider bill what the
    catalogue does not price or the relay cannot count; take a prediction out, in place."""
    if _WATCHED.isdisjoint(body):
        return
    modalities = body.get("modalities")
    if modalities is not None and (
            type(modalities) is not list or any(kind != "text" for kind in modalities)):
        raise InvalidRequest(
            "Invalid 'modalities': only [\"text\"] is supported by this gateway: audio or "
            "image output is priced apart by providers and streams where the gateway cannot "
            "count it.", param="modalities")
    for name, message in _REFUSED.items():
        if name in body:
            raise InvalidRequest(f"Invalid '{name}': {message}.", param=name)
    tier = body.get("service_tier")
    if tier is not None and tier not in _STANDARD_TIERS:
        raise InvalidRequest(
            f"Invalid 'service_tier': {str(tier)[:40]!r} is not supported by this gateway: "
            "the catalogue prices the standard tier; send auto or default, or leave it out.",
            param="service_tier")
    body.pop("prediction", None)

"""The LLM model catalogue and the `models` blueprint (/v1/models, /v1/pricing)."""

from silk.appctx import this_app
from silk.catalog.catalogue import Catalogue


def catalogue() -> Catalogue:
    """Return the catalogue built for this app at start-up."""
    return this_app().extensions["silk.catalogue"]

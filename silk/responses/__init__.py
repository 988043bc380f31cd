"""OpenAI Responses, one surface over the relay: schemas, translation, storage, views."""

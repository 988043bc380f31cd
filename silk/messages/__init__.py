"""Anthropic Messages, a second surface over the relay: schemas, translation, errors, views."""

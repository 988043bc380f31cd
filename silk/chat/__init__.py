"""Chat Completions, one surface over the relay: schemas, translation, errors, views."""

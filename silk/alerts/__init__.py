"""Alerts: events written to an outbox with the change that caused them, delivered apart."""

"""Ledger, reservations and usage records: the only code that moves money."""

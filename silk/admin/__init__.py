"""Operator API guarded by admin keys."""

"""Operations: health, readiness, metrics and the request log."""

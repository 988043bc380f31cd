"""Operations: health, readiness, metrics."""

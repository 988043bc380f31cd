"""Provider clients: pooled sessions, key failover, error dialects."""

"""Chat completions: validation, the relay, and its blueprint."""

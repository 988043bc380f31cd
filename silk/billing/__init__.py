"""Balance, usage and billing reports, tiers, top-up and redemption codes."""

"""PostgreSQL's way to reserve and settle: one statement each, in autocommit.

On PostgreSQL every round trip and every held row lock costs: a request that took the
account's row lock, computed, wrote and committed in five round trips made every other
request of that account queue behind it. Here the hold is computed from an unlocked
snapshot and applied by one conditional UPDATE that re-checks the balance and the quota
(so a stale snapshot can only make the statement match nothing, never overdraw), chained
with the reservation INSERT in one statement; the row lock lasts for that statement alone.
Settlement claims the reservation, charges the account and writes the ledger entry and the
usage record in one statement too.
"""

from __future__ import annotations

from sqlalchemy import text

RESERVE = text("""
WITH held AS (
    UPDATE accounts SET
        reserved_units = reserved_units + :hold,
        quota_held = quota_held + :quota,
        quota_used = CASE WHEN quota_month = :month THEN quota_used ELSE 0 END,
        quota_month = :month
    WHERE id = :account AND NOT disabled
      AND balance_units - reserved_units >= :hold
      AND (CAST(:quota AS BIGINT) = 0
           OR CAST(:tier_quota AS BIGINT)
              - CASE WHEN quota_month = :month THEN quota_used ELSE 0 END
              - quota_held >= :quota)
    RETURNING id
)
INSERT INTO reservations (account_id, key_id, request_id, model, hold_units, quota_tokens,
                          prompt_estimate, state, worker, created_at, expires_at)
SELECT id, CAST(:key AS INTEGER), CAST(:request AS VARCHAR), CAST(:model AS VARCHAR),
       :hold, :quota, :estimate, 'open', CAST(:worker AS VARCHAR), :now, :expires
FROM held
RETURNING id
""")

SETTLE = text("""
WITH claimed AS (
    UPDATE reservations SET state = 'settled', settled_at = :now
    WHERE id = :reservation AND state = 'open'
    RETURNING account_id
), charged AS (
    UPDATE accounts SET
        reserved_units = reserved_units - :hold,
        quota_held = quota_held - :quota,
        balance_units = balance_units - :charge,
        quota_used = CASE WHEN quota_month = :month THEN quota_used + :free ELSE :free END,
        quota_month = :month
    WHERE id IN (SELECT account_id FROM claimed)
    RETURNING id, balance_units
), entry AS (
    INSERT INTO ledger_entries (account_id, kind, amount_units, balance_after_units,
                                request_id, note, actor, created_at)
    SELECT id, 'charge', -CAST(:charge AS BIGINT), balance_units, CAST(:request AS VARCHAR),
           CAST(:model AS VARCHAR), 'gateway', :now
    FROM charged WHERE CAST(:billable AS BOOLEAN)
), recorded AS (
    INSERT INTO usage_records (
        request_id, account_id, key_id, model, upstream_model, provider, stream, status,
        http_status, prompt_tokens, completion_tokens, reasoning_tokens, cache_hit_tokens,
        total_tokens, free_tokens, subtotal_units, discount_units, cost_units,
        written_off_units, estimated, latency_ms, ttft_ms, created_at, day)
    SELECT CAST(:request AS VARCHAR), id, CAST(:key AS INTEGER), CAST(:model AS VARCHAR),
           CAST(:upstream_model AS VARCHAR), CAST(:provider AS VARCHAR),
           CAST(:stream AS BOOLEAN), CAST(:status AS VARCHAR), :http_status, :prompt_tokens,
           :completion_tokens, :reasoning_tokens, :cache_hit_tokens, :total_tokens,
           :free_tokens, :subtotal_units, :discount_units, :charge, :written_off_units,
           CAST(:estimated AS BOOLEAN), CAST(:latency_ms AS INTEGER),
           CAST(:ttft_ms AS INTEGER), :now, CAST(:day AS DATE)
    FROM charged
)
SELECT balance_units FROM charged
""")

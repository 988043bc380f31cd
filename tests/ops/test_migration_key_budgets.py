"""Migration 0005 starts every key's budget counters from its usage records and open holds."""

from __future__ import annotations

import sqlalchemy as sa

from tests.ops.test_schema import _app, _upgrade, empty_database  # noqa: F401 - a fixture


def test_upgrading_counts_what_keys_spent_and_hold(empty_database, upstream,  # noqa: F811
                                                   monkeypatch):
    from silk.metering.audit import audit

    app = _app(empty_database, upstream, monkeypatch)
    _upgrade(app, revision="0004")
    engine = sa.create_engine(empty_database)
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO accounts (id, email, tier, is_admin, disabled, balance_units, "
            "reserved_units, quota_month, quota_used, quota_held, created_at) VALUES "
            "(1, 'a@example.com', 'free', false, false, 1000, 300, '', 0, 0, "
            "'2031-01-01 00:00:00')"))
        conn.execute(sa.text(
            "INSERT INTO api_keys (id, account_id, key_hash, prefix, name, created_at) VALUES "
            "(1, 1, 'h1', 'sk-a', 'default', '2031-01-01 00:00:00'), "
            "(2, 1, 'h2', 'sk-b', 'idle', '2031-01-01 00:00:00')"))
        conn.execute(sa.text(
            "INSERT INTO reservations (account_id, key_id, request_id, model, hold_units, "
            "quota_tokens, prompt_estimate, state, worker, created_at, expires_at) VALUES "
            "(1, 1, 'open', 'm', 300, 0, 0, 'open', 'w', '2031-02-02 00:00:00', "
            "'2031-02-02 00:01:00')"))
        for request, day, cost in (("r1", "2031-01-30", 7), ("r2", "2031-02-01", 11),
                                   ("r3", "2031-02-02", 13), ("r4", "2031-02-02", 17)):
            conn.execute(sa.text(
                "INSERT INTO usage_records (request_id, account_id, key_id, model, status, "
                "cost_units, created_at, day, upstream_model, provider, stream, route, "
                "surface, http_status, prompt_tokens, completion_tokens, reasoning_tokens, "
                "cache_hit_tokens, total_tokens, free_tokens, subtotal_units, "
                "discount_units, written_off_units, upstream_cost_units, estimated) VALUES "
                "(:request, 1, 1, 'm', 'ok', :cost, :moment, :day, '', '', false, '', '', 200, "
                "0, 0, 0, 0, 0, 0, 0, 0, 0, 0, false)"),
                {"request": request, "day": day, "moment": day + " 12:00:00", "cost": cost})
        conn.execute(sa.text(
            "INSERT INTO ledger_entries (account_id, kind, amount_units, balance_after_units, "
            "note, actor, created_at) VALUES (1, 'topup', 1000, 1000, '', 't', "
            "'2031-01-01 00:00:00')"))
    _upgrade(app)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(
            "SELECT id, role, held_units, spent_day, spent_day_units, spent_month, "
            "spent_month_units, spent_total_units, cap_day_units FROM api_keys ORDER BY id"
        )).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [
        (1, "owner", 300, "2031-02-02", 30, "2031-02", 41, 48, None),
        (2, "owner", 0, "", 0, "", 0, 0, None)]
    with app.app_context():
        from silk.extensions import db

        assert audit(db.engine) == []

-- The workers' periodic ledger audit (`worker.reconcile_interval_ms`): one row per run, so that
-- one worker in the whole deployment runs it per interval, and operators see when it last ran and
-- what it found (`gengatectl ledger reconcile` is the same check, on demand).
CREATE TABLE ledger_audits (
    id          bigserial PRIMARY KEY,
    ran_at      timestamptz NOT NULL DEFAULT now(),
    duration_ms bigint NOT NULL CHECK (duration_ms >= 0),
    grants      bigint NOT NULL,
    generations bigint NOT NULL,
    users       bigint NOT NULL,
    mismatches  bigint NOT NULL CHECK (mismatches >= 0),
    -- The first mismatches found (at most 20), as `gengatectl ledger reconcile` prints them.
    sample      jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX ledger_audits_ran_at ON ledger_audits (ran_at);

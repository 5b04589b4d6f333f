-- Importing a legacy credits ledger (seed 001's `credits` table; `gengatectl import legacy-credits`).
--
-- Nothing here changes a live table or loosens one of its constraints: imported money goes into
-- `credit_grants` and `ledger_entries` like any other, under the same checks, and these tables only
-- record where each imported row came from.
--
-- How imported charges name their generation: a legacy charge's `order_no` holds the uuid of a
-- generation of the legacy system, which gengate's `generations` table does not have. Imported
-- charge entries keep `ledger_entries.generation_id` NULL (the column is already nullable, and an
-- entry drawn from a grant needs no generation for reconcile) and the legacy generation uuid is kept
-- here, in `legacy_import_credits.legacy_generation_uuid`. Fabricating `generations` rows instead
-- would mean inventing a provider, a model, a webhook token hash and a deadline for every legacy job,
-- and would put jobs that never ran through gengate in front of the API, the sweeper, the archiver
-- and reconcile's per-generation check; the link is only needed for history and for refunds, and
-- the mapping gives both.
--
-- How rollback knows what a run wrote: every user, grant, entry and void an import writes has a row
-- here naming its run; rows are never shared between runs (a legacy `trans_no` is imported once, a
-- legacy user once, an entry created once and voided at most once), and the foreign keys below keep
-- an imported grant or entry from being deleted while its mapping row exists.

-- One invocation of the import (dry runs write nothing, not even this).
CREATE TABLE legacy_import_runs (
    id              uuid PRIMARY KEY,
    -- The source database, password redacted.
    source          text NOT NULL,
    status          text NOT NULL DEFAULT 'running'
                    CHECK (status IN ('running', 'finished', 'failed', 'rolled_back')),
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    rolled_back_at  timestamptz,
    -- Legacy rows this run imported (users and credits rows), and the problems it reported.
    imported        bigint NOT NULL DEFAULT 0 CHECK (imported >= 0),
    problems        bigint NOT NULL DEFAULT 0 CHECK (problems >= 0),
    CONSTRAINT legacy_import_runs_rolled_back_check
        CHECK ((status = 'rolled_back') = (rolled_back_at IS NOT NULL))
);

-- A legacy user and the gengate user the import created for them.
CREATE TABLE legacy_import_users (
    legacy_uuid  text PRIMARY KEY,
    user_id      uuid NOT NULL UNIQUE REFERENCES users (id),
    run_id       uuid NOT NULL REFERENCES legacy_import_runs (id)
);
CREATE INDEX legacy_import_users_run_idx ON legacy_import_users (run_id);

-- A legacy `credits` row and what it became: a grant, a charge (entries drawn from grants) or a
-- refund (the void of the charge's entries).
CREATE TABLE legacy_import_credits (
    trans_no                text PRIMARY KEY,
    run_id                  uuid NOT NULL REFERENCES legacy_import_runs (id),
    user_id                 uuid NOT NULL REFERENCES users (id),
    kind                    text NOT NULL CHECK (kind IN ('grant', 'charge', 'refund')),
    legacy_trans_type       text NOT NULL,
    credits                 bigint NOT NULL CHECK (credits <> 0),
    -- The legacy row's order_no, as it was (a payment order or a generation uuid).
    legacy_order_no         text,
    -- For a charge or refund: the legacy generation it names, when order_no is one.
    legacy_generation_uuid  text,
    -- For a grant: the grant it became.
    grant_id                uuid UNIQUE REFERENCES credit_grants (id),
    CONSTRAINT legacy_import_credits_grant_check CHECK ((kind = 'grant') = (grant_id IS NOT NULL)),
    CONSTRAINT legacy_import_credits_sign_check CHECK ((kind = 'charge') = (credits < 0))
);
CREATE INDEX legacy_import_credits_run_idx ON legacy_import_credits (run_id);
CREATE INDEX legacy_import_credits_order_idx ON legacy_import_credits (user_id, legacy_order_no)
    WHERE kind = 'charge';

-- The ledger entries each legacy row wrote (`grant`, `charge`) or voided (`void`). An entry is
-- written once and voided at most once.
CREATE TABLE legacy_import_entries (
    entry_id   uuid NOT NULL REFERENCES ledger_entries (id),
    role       text NOT NULL CHECK (role IN ('grant', 'charge', 'void')),
    trans_no   text NOT NULL REFERENCES legacy_import_credits (trans_no),
    PRIMARY KEY (entry_id, role)
);
CREATE INDEX legacy_import_entries_trans_idx ON legacy_import_entries (trans_no);

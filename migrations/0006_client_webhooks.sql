-- Clients are told when their jobs end: signed webhooks (Standard Webhooks) to a URL given with
-- the request, or to a default endpoint registered for the user or one of its API keys. A final
-- transition writes a `notify.generation` message to the outbox in its own transaction; a worker
-- turns it into a delivery (below) and sends it, at least once, retrying on a schedule.

-- Where this generation's events go, when its client said so (overrides the default endpoints).
-- NULL events: every event.
ALTER TABLE generations
    ADD COLUMN webhook_url text CHECK (webhook_url IS NULL OR length(webhook_url) BETWEEN 1 AND 2048),
    ADD COLUMN webhook_events text[];

-- Default endpoints, registered by an operator for a user (api_key_id NULL) or for one API key.
-- At most one live endpoint per user and per key; the most specific one receives.
CREATE TABLE webhook_endpoints (
    id               uuid PRIMARY KEY,
    user_id          uuid NOT NULL REFERENCES users (id),
    api_key_id       uuid REFERENCES api_keys (id),
    url              text NOT NULL CHECK (length(url) BETWEEN 1 AND 2048),
    events           text[],
    description      text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Since when every attempt to it failed (NULL after a success); it is disabled once this is
    -- older than `client_webhooks.disable_after_ms`.
    failing_since    timestamptz,
    disabled_at      timestamptz,
    disabled_reason  text,
    CONSTRAINT webhook_endpoints_disabled_check CHECK ((disabled_at IS NULL) = (disabled_reason IS NULL))
);
CREATE UNIQUE INDEX webhook_endpoints_user_live_idx
    ON webhook_endpoints (user_id) WHERE api_key_id IS NULL AND disabled_at IS NULL;
CREATE UNIQUE INDEX webhook_endpoints_key_live_idx
    ON webhook_endpoints (api_key_id) WHERE api_key_id IS NOT NULL AND disabled_at IS NULL;
CREATE INDEX webhook_endpoints_user_idx ON webhook_endpoints (user_id, created_at);

-- Signing secrets. Nothing secret is stored: a secret is HMAC(server key of `key_version`, id),
-- derived when it is shown or used, as callback tokens are. A user's secret signs deliveries to
-- per-request URLs; an endpoint has its own. Rotating sets `retires_at` on the current one (both
-- sign until then) and adds a new one.
CREATE TABLE webhook_secrets (
    id           uuid PRIMARY KEY,
    user_id      uuid REFERENCES users (id),
    endpoint_id  uuid REFERENCES webhook_endpoints (id),
    key_version  smallint NOT NULL CHECK (key_version >= 1),
    created_at   timestamptz NOT NULL DEFAULT now(),
    retires_at   timestamptz,
    CONSTRAINT webhook_secrets_owner_check CHECK ((user_id IS NULL) <> (endpoint_id IS NULL))
);
CREATE UNIQUE INDEX webhook_secrets_user_current_idx
    ON webhook_secrets (user_id) WHERE user_id IS NOT NULL AND retires_at IS NULL;
CREATE UNIQUE INDEX webhook_secrets_endpoint_current_idx
    ON webhook_secrets (endpoint_id) WHERE endpoint_id IS NOT NULL AND retires_at IS NULL;
CREATE INDEX webhook_secrets_user_idx ON webhook_secrets (user_id) WHERE user_id IS NOT NULL;
CREATE INDEX webhook_secrets_endpoint_idx ON webhook_secrets (endpoint_id) WHERE endpoint_id IS NOT NULL;

-- One event to one URL: its id is the `webhook-id` header (stable across retries), its body is
-- fixed at the first attempt, so every retry sends the same bytes.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    generation_id    uuid NOT NULL REFERENCES generations (id),
    user_id          uuid NOT NULL REFERENCES users (id),
    endpoint_id      uuid REFERENCES webhook_endpoints (id),
    event            text NOT NULL CHECK (event IN
                         ('generation.completed', 'generation.failed', 'generation.canceled', 'generation.archived')),
    url              text NOT NULL,
    body             text NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the next attempt is due (pending deliveries only).
    next_attempt_at  timestamptz,
    -- A worker is sending it until then (a worker that dies mid-attempt lets it lapse).
    lease_until      timestamptz,
    -- The scheduler published a message for it; published again if it has not run by then.
    scheduled_until  timestamptz,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    CONSTRAINT webhook_deliveries_due_check CHECK ((status = 'pending') = (next_attempt_at IS NOT NULL)),
    CONSTRAINT webhook_deliveries_finished_check CHECK ((status = 'pending') = (finished_at IS NULL))
);
CREATE INDEX webhook_deliveries_generation_idx ON webhook_deliveries (generation_id, created_at);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_recent_idx ON webhook_deliveries (created_at DESC, id DESC);

-- Every attempt: written when it starts, completed when it ends (an attempt without an outcome
-- was cut short: its worker stopped).
CREATE TABLE webhook_attempts (
    delivery_id  uuid NOT NULL REFERENCES webhook_deliveries (id),
    attempt      integer NOT NULL CHECK (attempt >= 1),
    started_at   timestamptz NOT NULL DEFAULT now(),
    status_code  smallint,
    latency_ms   integer CHECK (latency_ms >= 0),
    error        text,
    PRIMARY KEY (delivery_id, attempt)
);

-- Postpaid holds. A postpaid job is charged only when it succeeds, but from its submit until then
-- its price is held against its owner's balance, so that concurrent postpaid submits can never
-- promise more credits than the user has. A hold draws nothing from any grant: the charge of a
-- success draws (in consumption order, at that time) and consumes the hold in the same
-- transaction; a failure or cancel releases it. Released holds stay, for the audit trail.
CREATE TABLE credit_holds (
    generation_id    uuid PRIMARY KEY REFERENCES generations (id),
    user_id          uuid NOT NULL REFERENCES users (id),
    amount           bigint NOT NULL CHECK (amount > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    released_at      timestamptz,
    -- charged (the success consumed it), failed, canceled
    released_reason  text,
    CONSTRAINT credit_holds_release_check CHECK ((released_at IS NULL) = (released_reason IS NULL))
);
-- What a user has held now: summed at every submit of that user.
CREATE INDEX credit_holds_active_idx ON credit_holds (user_id) WHERE released_at IS NULL;

-- Postpaid jobs already in flight hold their price from now on.
INSERT INTO credit_holds (generation_id, user_id, amount)
SELECT id, user_id, cost FROM generations
WHERE billing = 'postpaid' AND status IN ('queued', 'submitted') AND cost > 0;

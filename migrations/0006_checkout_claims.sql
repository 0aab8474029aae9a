-- +goose Up

-- Idempotency-Keys of the checkouts the ingress accepted, from the moment
-- it publishes a checkout until (some time after) its partition writes the
-- order, which then records the key itself (orders.idempotency_key and
-- request_hash). Redis holds the same as a cache; this row survives Redis
-- losing it, so that a retry with the key is still told apart from another
-- request reusing it (the same answer, or 422). order_id derives from the
-- user and the key (order.IdempotentID). Rows older than two days are
-- deleted as new ones are written (postgres.ClaimKey).
CREATE TABLE checkout_claims (
    order_id     uuid        PRIMARY KEY,
    request_hash text        NOT NULL,
    order_number text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX checkout_claims_created_at ON checkout_claims (created_at);

-- +goose Down
DROP TABLE checkout_claims;

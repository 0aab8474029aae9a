-- +goose Up

-- Cancels that reached an order's home partition before its checkout did
-- (the checkout's message was held by a killed worker and came back after
-- the ack wait, or is replayed from a dead letter). The cancel is applied
-- and recorded as processed like any other; this row remembers it, and the
-- checkout that arrives later for the same order and user is decided
-- cancelled, taking no stock, in the transaction that deletes the row. A
-- dead-lettered checkout with a row here is recorded cancelled too.
CREATE TABLE cancel_tombstones (
    order_id     uuid        PRIMARY KEY,
    user_id      text        NOT NULL,
    partition    int         NOT NULL CHECK (partition >= 0),
    cancelled_at timestamptz NOT NULL
);

-- +goose Down
DROP TABLE cancel_tombstones;

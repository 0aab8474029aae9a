-- +goose Up

-- Dead letters: command messages that exhausted their deliveries or were
-- terminated as poison, and single commands dropped from a good message.
-- This table is the source of truth of the admin API (list, replay state);
-- the ORDER_DLQ stream keeps a copy of each message with its headers for
-- NATS tooling. source_key names the dead message once however often it is
-- recorded: "seq-<ORDER_CMDS stream sequence>" for a whole message,
-- "cmd-<command id>" for a command dropped alone.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    source_key  text        NOT NULL UNIQUE,
    partition   int         NOT NULL CHECK (partition >= 0),
    subject     text        NOT NULL,
    stream_seq  bigint      NOT NULL DEFAULT 0 CHECK (stream_seq >= 0),
    reason      text        NOT NULL,
    last_error  text        NOT NULL DEFAULT '',
    deliveries  bigint      NOT NULL DEFAULT 0 CHECK (deliveries >= 0),
    payload     bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    replayed_at timestamptz
);
CREATE INDEX dead_letters_unreplayed ON dead_letters (id) WHERE replayed_at IS NULL;

-- +goose Down
DROP TABLE dead_letters;

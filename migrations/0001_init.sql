-- +goose Up

-- SKUs on sale. Money is in the currency's minor unit. stock only moves
-- through the SKU's partition; the CHECK is the last guard against oversell.
CREATE TABLE skus (
    id                   uuid PRIMARY KEY,
    name                 text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    price                bigint      NOT NULL CHECK (price >= 0),
    currency             char(3)     NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    stock                bigint      NOT NULL CHECK (stock >= 0),
    initial_stock        bigint      NOT NULL CHECK (initial_stock >= 0),
    restocked            bigint      NOT NULL DEFAULT 0 CHECK (restocked >= 0),
    units_sold           bigint      NOT NULL DEFAULT 0 CHECK (units_sold >= 0),
    per_user_limit       bigint      CHECK (per_user_limit > 0),
    sale_starts_at       timestamptz,
    sale_ends_at         timestamptz,
    payment_hold_seconds bigint      CHECK (payment_hold_seconds >= 1),
    paused               boolean     NOT NULL DEFAULT false,
    version              bigint      NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK (sale_starts_at IS NULL OR sale_ends_at IS NULL OR sale_ends_at > sale_starts_at),
    CHECK (stock + units_sold <= initial_stock + restocked)
);

-- Shipping addresses. Deleting one hides it (deleted_at) so that orders that
-- ship to it keep a valid reference.
CREATE TABLE addresses (
    id          uuid PRIMARY KEY,
    user_id     text        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    recipient   text        NOT NULL,
    line1       text        NOT NULL,
    line2       text,
    city        text        NOT NULL,
    postal_code text        NOT NULL,
    country     char(2)     NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    phone       text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    deleted_at  timestamptz
);
CREATE INDEX addresses_user_newest ON addresses (user_id, created_at DESC) WHERE deleted_at IS NULL;

-- Orders. The id is assigned by the ingress (derived from the
-- Idempotency-Key when one is given); order_number comes from the
-- order_number sequence, allocated in blocks by each ingress.
CREATE TABLE orders (
    id              uuid PRIMARY KEY,
    order_number    text        NOT NULL UNIQUE,
    user_id         text        NOT NULL CHECK (length(user_id) BETWEEN 1 AND 128),
    address_id      uuid        NOT NULL REFERENCES addresses (id),
    payment_method  text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected', 'paid', 'expired', 'cancelled')),
    reject_reason   text,
    reject_skus     uuid[],
    currency        char(3),
    subtotal        bigint      NOT NULL DEFAULT 0 CHECK (subtotal >= 0),
    shipping_fee    bigint      NOT NULL DEFAULT 0 CHECK (shipping_fee >= 0),
    grand_total     bigint      NOT NULL DEFAULT 0 CHECK (grand_total >= 0),
    home_partition  int         NOT NULL CHECK (home_partition >= 0),
    idempotency_key text,
    request_hash    text,
    accepted_at     timestamptz NOT NULL,
    decided_at      timestamptz,
    hold_until      timestamptz,
    provider_ref    text UNIQUE,
    paid_at         timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (user_id, idempotency_key),
    CHECK ((status = 'rejected') = (reject_reason IS NOT NULL))
);
CREATE INDEX orders_user_newest ON orders (user_id, accepted_at DESC, id DESC);
CREATE INDEX orders_hold_due ON orders (home_partition, hold_until) WHERE status = 'confirmed';

-- Order lines with the price paid.
CREATE TABLE order_lines (
    order_id   uuid   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no    int    NOT NULL CHECK (line_no >= 0),
    sku_id     uuid   NOT NULL REFERENCES skus (id),
    quantity   bigint NOT NULL CHECK (quantity > 0),
    unit_price bigint NOT NULL CHECK (unit_price >= 0),
    line_total bigint NOT NULL CHECK (line_total = quantity * unit_price),
    PRIMARY KEY (order_id, line_no)
);
CREATE INDEX order_lines_sku ON order_lines (sku_id);

-- What an order holds in each partition while a multi-partition order is
-- being decided (the saga's state, durable across crashes).
CREATE TABLE reservations (
    order_id   uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    partition  int         NOT NULL CHECK (partition >= 0),
    status     text        NOT NULL CHECK (status IN ('requested', 'held', 'failed', 'released', 'confirmed')),
    reason     text,
    lines      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    deadline   timestamptz NOT NULL,
    PRIMARY KEY (order_id, partition)
);
CREATE INDEX reservations_open ON reservations (deadline) WHERE status IN ('requested', 'held');

-- Commands a partition has applied: a redelivered command is skipped.
CREATE TABLE processed_commands (
    id         uuid PRIMARY KEY,
    kind       text        NOT NULL,
    partition  int         NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Transactional outbox: every state change writes its event here in the same
-- transaction; the relay publishes rows in id order and deletes them.
-- subject is the NATS subject (events, or commands for another partition).
CREATE TABLE outbox (
    id         bigserial PRIMARY KEY,
    msg_id     text        NOT NULL UNIQUE,
    subject    text        NOT NULL,
    payload    bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Order numbers: each ingress takes a block of 1000 values at a time.
CREATE SEQUENCE order_number_seq INCREMENT BY 1000 START WITH 1000;

-- +goose Down
DROP SEQUENCE order_number_seq;
DROP TABLE outbox;
DROP TABLE processed_commands;
DROP TABLE reservations;
DROP TABLE order_lines;
DROP TABLE orders;
DROP TABLE addresses;
DROP TABLE skus;

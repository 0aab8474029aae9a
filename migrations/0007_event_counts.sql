-- +goose Up

-- Decision events written, one row per order (postgres.InsertOutbox writes
-- it in the transaction that decides). The outbox drops a second copy of a
-- waiting event (same id), JetStream drops one within its dedupe window and
-- consumers dedupe on the id beyond it, so an order decided twice with the
-- same outcome shows nowhere else: here writes counts every attempt, and
-- anything above 1 is a repeated decision (flashbench, chaos and the e2e
-- tests check it). seq numbers the decisions in the order they were made:
-- it is taken when the deciding transaction writes its outbox, under the
-- lock of the SKUs it decided on, so a SKU's decisions are numbered in the
-- order they took effect (flashbench checks that no buyer was refused
-- out_of_stock before a later buyer of that SKU was confirmed).
CREATE TABLE order_decisions (
    order_id   uuid        PRIMARY KEY,
    seq        bigint      GENERATED ALWAYS AS IDENTITY,
    event_type text        NOT NULL, -- of the first write: order.confirmed or order.rejected
    writes     int         NOT NULL DEFAULT 1 CHECK (writes >= 1),
    first_at   timestamptz NOT NULL DEFAULT now(),
    last_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX order_decisions_repeated ON order_decisions (order_id) WHERE writes > 1;

-- Per SKU, the units that the order events relayed to ORDER_EVENTS say
-- orders hold: the lines of order.confirmed events, less those of
-- order.expired events and of order.cancelled events of confirmed orders.
-- The relay adds each flush's events in the statement that deletes their
-- outbox rows once JetStream acked them, so every relayed event counts
-- once, and reconciliation reads one row per SKU instead of the stream.
CREATE TABLE event_holdings (
    sku_id     uuid        PRIMARY KEY,
    held       bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The events relayed before this migration: what orders hold now, less
-- what the events still waiting in the outbox will add (confirmations) and
-- plus what they will take away (expiries, cancellations of confirmed
-- orders) when they are relayed.
INSERT INTO event_holdings (sku_id, held)
SELECT sku_id, sum(qty)::bigint FROM (
    SELECT l.sku_id, l.quantity AS qty
    FROM order_lines l JOIN orders o ON o.id = l.order_id
    WHERE o.status IN ('confirmed', 'paid')
    UNION ALL
    SELECT (l->>'sku_id')::uuid,
           CASE WHEN e.subject = 'orders.events.order.confirmed' THEN -1 ELSE 1 END * (l->>'quantity')::bigint
    FROM (SELECT subject, convert_from(payload, 'UTF8')::jsonb -> 'data' AS o
          FROM outbox
          WHERE subject IN ('orders.events.order.confirmed', 'orders.events.order.expired', 'orders.events.order.cancelled')) e
    CROSS JOIN LATERAL jsonb_array_elements(coalesce(e.o -> 'lines', '[]')) l
    WHERE e.subject <> 'orders.events.order.cancelled' OR (e.o ->> 'decided_at') IS NOT NULL
) h
GROUP BY sku_id;

-- +goose Down
DROP TABLE event_holdings;
DROP TABLE order_decisions;

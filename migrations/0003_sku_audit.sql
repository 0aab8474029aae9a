-- +goose Up

-- What admins changed on SKUs (PATCH, pause, resume): who (the admin's
-- token subject), when, and the SKU before and after, written in the
-- transaction of the change.
CREATE TABLE sku_audit (
    id         bigserial   PRIMARY KEY,
    sku_id     uuid        NOT NULL REFERENCES skus (id),
    action     text        NOT NULL CHECK (action IN ('update', 'pause', 'resume')),
    actor      text        NOT NULL CHECK (length(actor) BETWEEN 1 AND 128),
    at         timestamptz NOT NULL DEFAULT now(),
    before     jsonb       NOT NULL,
    after      jsonb       NOT NULL
);
CREATE INDEX sku_audit_sku ON sku_audit (sku_id, id DESC);

-- +goose Down
DROP TABLE sku_audit;

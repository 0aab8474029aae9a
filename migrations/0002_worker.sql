-- +goose Up

-- from_cart: the order was placed from the cart, so its purchased SKUs leave
-- the cart when it is confirmed. A multi-partition order is confirmed by
-- whichever partition records its last reservation, which has not seen the
-- checkout command: it reads this flag instead.
ALTER TABLE orders ADD COLUMN from_cart boolean NOT NULL DEFAULT false;

-- The sweeper looks for pending multi-partition orders; there are few, and
-- this keeps the look-up off the large orders table's heap.
CREATE INDEX orders_pending ON orders (id) WHERE status = 'pending';

-- +goose Down
DROP INDEX orders_pending;
ALTER TABLE orders DROP COLUMN from_cart;

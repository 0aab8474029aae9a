package ingress

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// Sold out at the ingress.
//
// A checkout naming a SKU that its partition marked sold out (Redis key
// soldout:<sku>, see pkg/redisstore's soldout.go) is decided here: the
// order is rejected out_of_stock naming those SKUs, its state is cached at
// once (GET /v1/orders/{id} answers rejected right after the 202), and a
// record of the decision goes to order.IngressSubject, from which any
// worker writes the order, its lines and its order.rejected event
// (postgres.DB.RecordRejections). The partition never sees it.
//
// The marker stands only while the SKU's committed stock is 0 (the
// partitions delete it, under the row lock and before the commit, whenever
// stock comes back from 0: restock, cancel, expiry, a saga's release), so
// the rejection is exactly what the partition would have decided at the
// moment the marker was read: an order needs every line, and a line of a
// SKU at stock 0 cannot be served.
//
// Cost: one read of the lines' markers per checkout, one round trip (what
// every checkout pays, accepted or not), then for a rejected order one
// Redis script (its state, user index and idempotency record, as
// PutPending does for a pending one) and one publish through the same
// batching publisher: the same as an accepted order. The 202 says "pending", as the OpenAPI schema
// and SPEC 3.2 require of every 202; the status is rejected from the first
// GET on.

// SoldOutStore is what the sold-out shortcut needs of Redis
// (*redisstore.Store). The ingress uses it when the StatusCache also
// implements it, as the Redis store does; with another StatusCache (test
// fakes) every checkout goes to its partition.
type SoldOutStore interface {
	// SoldOut reports which of skus are marked sold out, in one round trip.
	SoldOut(ctx context.Context, skus []uuid.UUID) (map[uuid.UUID]bool, error)
	// PutDecided caches an order decided at the ingress, indexes it among
	// its user's recent orders and stores idem (if not nil), at once.
	PutDecided(ctx context.Context, o *order.Order, idem *order.Idempotency) error
	// DropDecided removes what PutDecided cached, except the idempotency
	// record.
	DropDecided(ctx context.Context, o *order.Order) error
}

// soldOutStore returns the status cache as a SoldOutStore, or nil.
func (s *Server) soldOutStore() SoldOutStore {
	m, _ := s.Status.(SoldOutStore)
	return m
}

// soldOutLines returns the SKUs of lines that are marked sold out (none if
// the shortcut is off, or if the partition would reject the order for
// another reason first: reachesStock), reading every line's marker in one
// round trip. If
// the markers cannot be read it logs and returns none: the checkout goes to
// its partition, which decides the same. It returns an error only when ctx
// is done.
func (s *Server) soldOutLines(ctx context.Context, lines []order.LineRequest) ([]uuid.UUID, error) {
	st := s.soldOutStore()
	if st == nil || len(lines) == 0 {
		return nil, nil
	}
	ids := make([]uuid.UUID, len(lines))
	for i, l := range lines {
		ids[i] = l.SKUID
	}
	marked, err := st.SoldOut(ctx, ids)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.log.WarnContext(ctx, "checkout: cannot read the sold-out markers; the partition decides", "err", err)
		return nil, nil
	}
	var out []uuid.UUID
	for _, id := range ids {
		if marked[id] {
			out = append(out, id)
			delete(marked, id) // a SKU on two lines is named once
		}
	}
	if len(out) > 0 && !s.reachesStock(ctx, ids) {
		return nil, nil
	}
	return out, nil
}

// reachesStock reports whether a partition deciding an order of skus now
// would get as far as the stock check, as far as the in-process catalog
// tells: every SKU exists, its sale is open (not paused, within its
// window) and all share one currency. Otherwise the partition would
// reject it for that reason first (order.Ledger's order of checks), and
// the order goes there so that the reason is the one it gives. The one
// earlier check the ingress cannot see is the per-user limit: an order
// over the limit of a sold-out SKU is rejected out_of_stock here rather
// than limit_exceeded, both true.
func (s *Server) reachesStock(ctx context.Context, skus []uuid.UUID) bool {
	catalog, err := s.skus.get(ctx, skus)
	if err != nil {
		return false
	}
	now := time.Now()
	currency := ""
	for _, id := range skus {
		sku := catalog[id]
		switch {
		case sku == nil, sku.SaleState(now) != "":
			return false
		case currency == "":
			currency = sku.Currency
		case sku.Currency != currency:
			return false
		}
	}
	return true
}

// rejectSoldOut decides the checkout cmd rejected out_of_stock naming skus
// (from soldOutLines): it caches the rejected order with rec (the
// idempotency record, nil without an Idempotency-Key, left unpublished as
// for a pending order) and publishes the record of the decision, waiting
// for JetStream's ack like publishCheckout. If the publish fails, the
// cached order is removed again and the error is EUNAVAILABLE with a
// Retry-After; rec stays unpublished, so that a retry with the same key
// republishes cmd, the checkout, to its partition. On success the caller
// marks rec published and answers 202 with cmd's id and number.
func (s *Server) rejectSoldOut(ctx context.Context, cmd order.Command, skus []uuid.UUID, rec *order.Idempotency) error {
	st := s.soldOutStore()
	if st == nil || cmd.Checkout == nil || len(skus) == 0 {
		return fmt.Errorf("reject sold out: no store, checkout or SKU") // a bug: 500
	}
	rej := &order.Rejection{
		Checkout:  *cmd.Checkout,
		Reason:    order.RejectOutOfStock,
		SKUs:      skus,
		DecidedAt: time.Now().UTC().Truncate(time.Microsecond),
	}
	record := order.Command{
		ID:        order.RejectionCommandID(cmd.Checkout.OrderID),
		Kind:      order.KindRecordRejection,
		Partition: cmd.Partition,
		At:        cmd.At,
		Rejection: rej,
	}
	if err := record.Validate(record.Partition, s.cfg.Partitions); err != nil {
		return fmt.Errorf("checkout built an invalid rejection: %v", err) // a bug: 500
	}
	ids := make([]uuid.UUID, len(cmd.Checkout.Lines))
	for i, l := range cmd.Checkout.Lines {
		ids[i] = l.SKUID
	}
	catalog, err := s.skus.get(ctx, ids)
	if err != nil {
		// Only the names and currency of the cached copy suffer; the
		// worker caches the stored order when it has written it.
		s.log.WarnContext(ctx, "checkout: cannot read the SKUs of a sold-out order", "err", err)
	}
	o := rej.Rejected(cmd.At, catalog)
	if err := st.PutDecided(ctx, o, rec); err != nil {
		return err
	}
	if err := s.publishOrder(ctx, record); err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		if derr := st.DropDecided(dctx, o); derr != nil {
			s.log.ErrorContext(ctx, "checkout: could not remove the rejected order of a failed publish", "order", o.ID, "err", derr)
		}
		cancel()
		return err
	}
	return nil
}

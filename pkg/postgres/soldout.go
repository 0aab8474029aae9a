package postgres

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// SoldOutMarks keeps the ingress's sold-out markers true
// (pkg/redisstore's soldout.go has the argument): a partition's
// transaction calls Reopen under the SKU row locks before it commits stock
// that comes back from 0, and MarkSoldOut after it committed SKUs at 0.
type SoldOutMarks interface {
	// Reopen deletes the markers of SKUs whose stock is coming back and
	// raises their floors to the versions about to be committed. An error
	// fails the transaction (EUNAVAILABLE: retried later).
	Reopen(ctx context.Context, skus []order.SKUVersion) error
	// MarkSoldOut marks SKUs committed at stock 0 at those versions,
	// except below their floors. An error only costs the ingress its
	// shortcut.
	MarkSoldOut(ctx context.Context, skus []order.SKUVersion) (int, error)
}

// markTimeout bounds MarkSoldOut after a commit: the batch waits for it.
const markTimeout = time.Second

// lockedSKU is a SKU row as a batch locks it, with its version.
type lockedSKU struct {
	order.SKU
	Version int64 `db:"version"`
}

// reopen calls Marks.Reopen for the SKUs of changed whose stock the batch
// takes from 0 up (restock, cancel, expiry, release): inside the
// transaction, after their guarded UPDATE returned the versions it wrote,
// before the commit. Selling, or staying at 0, needs nothing: no marker can
// stand while stock is above 0, and one that stands at 0 stays true.
func (b *partBatch) reopen(changed []uuid.UUID) error {
	if b.cfg.Marks == nil {
		return nil
	}
	var up []order.SKUVersion
	for _, id := range changed {
		if b.before[id].Stock == 0 && b.ledger.SKUs[id].Stock > 0 {
			up = append(up, order.SKUVersion{SKU: id, Version: b.versions[id]})
		}
	}
	if len(up) == 0 {
		return nil
	}
	if err := b.cfg.Marks.Reopen(b.ctx, up); err != nil {
		return fmt.Errorf("stock back for %d SKUs: %w", len(up), err)
	}
	return nil
}

// soldOut returns the SKUs the batch locked that it leaves at stock 0, at
// the version it committed (or read, if it did not change them: under the
// row lock that is the committed one).
func (b *partBatch) soldOut() []order.SKUVersion {
	var out []order.SKUVersion
	for id, s := range b.ledger.SKUs {
		if s.Stock == 0 {
			out = append(out, order.SKUVersion{SKU: id, Version: b.versions[id]})
		}
	}
	return out
}

// markSoldOut marks the SKUs a committed batch left at stock 0. A failure
// is logged: checkouts of those SKUs keep going through the partition,
// which decides them the same way.
func (c PartitionConfig) markSoldOut(ctx context.Context, vs []order.SKUVersion) {
	if c.Marks == nil || len(vs) == 0 {
		return
	}
	mctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), markTimeout)
	defer cancel()
	if _, err := c.Marks.MarkSoldOut(mctx, vs); err != nil {
		slog.WarnContext(ctx, "sold-out markers not set; checkouts of these SKUs go through their partition", "skus", len(vs), "err", err)
	}
}

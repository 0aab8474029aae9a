package postgres

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
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
	// fails the transaction; ApplyBatch then applies the batch without
	// the commands that bring those SKUs back (BatchResult.Held).
	Reopen(ctx context.Context, skus []order.SKUVersion) error
	// MarkSoldOut marks SKUs committed at stock 0 at those versions,
	// except below their floors. An error only costs the ingress its
	// shortcut.
	MarkSoldOut(ctx context.Context, skus []order.SKUVersion) (int, error)
}

// markTimeout bounds MarkSoldOut after a commit: the batch waits for it.
// reopenTimeout bounds Reopen inside a transaction, which holds the SKU
// row locks meanwhile: an unreachable Redis costs a batch at most that.
const (
	markTimeout   = time.Second
	reopenTimeout = time.Second
)

// ReopenError says that the sold-out markers of SKUs whose stock a
// transaction would bring back from 0 could not be deleted (Redis did not
// answer): the transaction did not commit. ApplyBatch does not return it:
// it applies the batch again without the commands that bring those SKUs'
// stock back, and reports them (BatchResult.Held); ExpireDue does (its
// sweep runs again a second later). Its code is Err's, EUNAVAILABLE.
type ReopenError struct {
	SKUs []uuid.UUID
	Err  error
}

// Error implements error.
func (e *ReopenError) Error() string {
	return fmt.Sprintf("stock back from 0 for %d SKUs: %v", len(e.SKUs), e.Err)
}

// Unwrap returns Redis's error.
func (e *ReopenError) Unwrap() error { return e.Err }

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
	rctx, cancel := context.WithTimeout(b.ctx, reopenTimeout)
	defer cancel()
	if err := b.cfg.Marks.Reopen(rctx, up); err != nil {
		ids := make([]uuid.UUID, len(up))
		for i, v := range up {
			ids[i] = v.SKU
		}
		return &ReopenError{SKUs: ids, Err: err}
	}
	return nil
}

// Holding back what needs the markers.
//
// A Redis outage must not stall a partition: only the commands that bring
// a sold-out SKU's stock back (a restock, a cancel, a release of an order
// holding it) need Reopen, and only they wait. When Reopen fails,
// ApplyBatch runs the batch again in a new transaction without them (and
// without any later command that would bring the same SKUs back), as if
// they had not arrived yet: stock still never comes back while a marker
// may stand, and the other commands are decided against the stock
// committed. Their ids are BatchResult.Held: the caller applies them again
// later (their messages are redelivered), when the commands applied now
// are skipped. Should the batch without them bring another SKU back from
// 0 (a per-user limit no longer freed by a held cancel lets a later
// checkout be refused), that one is held as well, in one more pass: each
// pass holds more SKUs, so the passes end. The passes after the first do
// not ask Redis again (downMarks).

// holds reports whether c would bring back the stock of a SKU the batch
// holds back (b.hold): a restock of it, or a cancel or release of an order
// with a line of it in this partition.
func (b *partBatch) holds(c order.Command) bool {
	if len(b.hold) == 0 {
		return false
	}
	switch c.Kind {
	case order.KindRestock:
		return b.hold[c.Restock.SKUID]
	case order.KindCancel, order.KindRelease:
		st := b.orders[commandOrder(c)]
		if st == nil {
			return false
		}
		if r := st.resv[b.p]; r != nil {
			for _, l := range r.lines {
				if b.hold[l.SKUID] {
					return true
				}
			}
		}
		for _, l := range st.o.Lines {
			if b.hold[l.SKUID] && order.Partition(l.SKUID, b.cfg.Partitions) == b.p {
				return true
			}
		}
	}
	return false
}

// holdBack is what ApplyBatch holds back across its passes.
type holdBack struct {
	skus map[uuid.UUID]bool
	err  *ReopenError // the last Reopen failure, naming every SKU held
}

// again reports whether err is a Reopen failure that names a SKU not held
// yet: then it holds them, makes cfg's Reopen fail at once with the same
// error (Redis was just found unreachable), and the batch is run again.
func (h *holdBack) again(err error, cfg *PartitionConfig) bool {
	var re *ReopenError
	if !errors.As(err, &re) {
		return false
	}
	grew := false
	for _, id := range re.SKUs {
		if !h.skus[id] {
			if h.skus == nil {
				h.skus = map[uuid.UUID]bool{}
			}
			h.skus[id], grew = true, true
		}
	}
	if !grew {
		return false
	}
	h.err = &ReopenError{SKUs: slices.Collect(maps.Keys(h.skus)), Err: re.Err}
	if _, down := cfg.Marks.(downMarks); !down {
		cfg.Marks = downMarks{SoldOutMarks: cfg.Marks, err: re.Err}
	}
	return true
}

// downMarks is a SoldOutMarks whose Reopen fails with err without asking
// Redis, for the passes of a batch after Redis failed to answer.
type downMarks struct {
	SoldOutMarks
	err error
}

func (d downMarks) Reopen(context.Context, []order.SKUVersion) error { return d.err }

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

package order

import (
	"time"

	"github.com/google/uuid"
)

// Ledger is what a partition worker knows while it decides a batch of
// commands: the state of its SKUs and what each user already holds of them.
// The worker loads it inside the batch's transaction, decides every command
// in arrival order against it, and writes back what changed. It is not safe
// for concurrent use: a partition is serial by design.
type Ledger struct {
	SKUs map[uuid.UUID]*SKU
	Held map[UserSKU]int64 // units held (confirmed or paid) per user and SKU
	Now  time.Time
}

// UserSKU keys what one user holds of one SKU.
type UserSKU struct {
	User string
	SKU  uuid.UUID
}

// Decision is the outcome of taking stock for an order (or part of one).
type Decision struct {
	Reason RejectReason // empty when the stock was taken
	SKUs   []uuid.UUID  // the SKUs at fault when rejected
	Lines  []Line       // the lines priced at the SKUs' current prices
}

// OK reports whether the stock was taken.
func (d Decision) OK() bool { return d.Reason == "" }

// Take decides, all or nothing, whether user may have lines now, and if so
// takes the stock. The reasons are checked in this order: sku_not_found,
// sale_paused, sale_not_open, currency_mismatch, limit_exceeded,
// out_of_stock; the SKUs of the first failing check are named. A buyer is
// rejected out_of_stock only when a SKU has fewer units left than asked.
func (l *Ledger) Take(user string, lines []LineRequest) Decision {
	var d Decision
	fail := func(r RejectReason, id uuid.UUID) {
		if d.Reason == "" || d.Reason == r {
			d.Reason = r
			d.SKUs = append(d.SKUs, id)
		}
	}
	for _, ln := range lines {
		if l.SKUs[ln.SKUID] == nil {
			fail(RejectSKUNotFound, ln.SKUID)
		}
	}
	if !d.OK() {
		return d
	}
	for _, check := range []func(*SKU, LineRequest) RejectReason{
		func(s *SKU, _ LineRequest) RejectReason {
			if r := s.SaleState(l.Now); r == RejectSalePaused {
				return r
			}
			return ""
		},
		func(s *SKU, _ LineRequest) RejectReason { return s.SaleState(l.Now) },
		func(s *SKU, _ LineRequest) RejectReason {
			if s.Currency != l.SKUs[lines[0].SKUID].Currency {
				return RejectCurrencyMismatch
			}
			return ""
		},
		func(s *SKU, ln LineRequest) RejectReason {
			if s.PerUserLimit != nil && l.Held[UserSKU{user, s.ID}]+ln.Quantity > *s.PerUserLimit {
				return RejectLimitExceeded
			}
			return ""
		},
		func(s *SKU, ln LineRequest) RejectReason {
			if s.Stock < ln.Quantity {
				return RejectOutOfStock
			}
			return ""
		},
	} {
		for _, ln := range lines {
			if r := check(l.SKUs[ln.SKUID], ln); r != "" {
				fail(r, ln.SKUID)
			}
		}
		if !d.OK() {
			d.Lines = l.price(lines)
			return d
		}
	}
	for _, ln := range lines {
		s := l.SKUs[ln.SKUID]
		s.Stock -= ln.Quantity
		s.UnitsSold += ln.Quantity
		l.Held[UserSKU{user, s.ID}] += ln.Quantity
	}
	d.Lines = l.price(lines)
	return d
}

// Release gives back the stock of lines that user held. Lines whose SKU the
// ledger does not know are skipped.
func (l *Ledger) Release(user string, lines []Line) {
	for _, ln := range lines {
		s := l.SKUs[ln.SKUID]
		if s == nil {
			continue
		}
		s.Stock += ln.Quantity
		s.UnitsSold -= ln.Quantity
		k := UserSKU{user, s.ID}
		if l.Held[k] -= ln.Quantity; l.Held[k] <= 0 {
			delete(l.Held, k)
		}
	}
}

// Restock adds quantity units to a SKU's stock. It reports false if the
// ledger does not know the SKU.
func (l *Ledger) Restock(sku uuid.UUID, quantity int64) bool {
	s := l.SKUs[sku]
	if s == nil {
		return false
	}
	s.Stock += quantity
	s.Restocked += quantity
	return true
}

func (l *Ledger) price(lines []LineRequest) []Line {
	out := make([]Line, 0, len(lines))
	for _, ln := range lines {
		line := Line{SKUID: ln.SKUID, Quantity: ln.Quantity}
		if s := l.SKUs[ln.SKUID]; s != nil {
			line.Name, line.UnitPrice = s.Name, s.Price
		}
		line.LineTotal = line.UnitPrice * line.Quantity
		out = append(out, line)
	}
	return out
}

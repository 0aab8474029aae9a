package order

import (
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// MaxProviderRefLen bounds a payment provider's reference.
const MaxProviderRefLen = 200

// Payment is the payment provider's report that an order was paid: the
// body of the payment webhook.
type Payment struct {
	OrderID     uuid.UUID `json:"order_id"`
	Amount      int64     `json:"amount"`
	Currency    string    `json:"currency"`
	ProviderRef string    `json:"provider_ref"`
}

// Validate checks the payment's shape and returns an EINVALID error naming
// every field at fault. Whether it matches its order is the store's check.
func (p *Payment) Validate() error {
	var f Fields
	if p.OrderID == uuid.Nil {
		f.Add("order_id", "is required")
	}
	if p.Amount < 0 || p.Amount > MaxPrice*MaxLineQty {
		f.Add("amount", "must be a non-negative amount in minor units")
	}
	if !ValidCurrency(p.Currency) {
		f.Add("currency", "must be an ISO 4217 code of three upper-case letters")
	}
	switch {
	case strings.TrimSpace(p.ProviderRef) == "":
		f.Add("provider_ref", "is required")
	case len(p.ProviderRef) > MaxProviderRefLen:
		f.Add("provider_ref", "is longer than %d bytes", MaxProviderRefLen)
	case !utf8.ValidString(p.ProviderRef) || strings.ContainsFunc(p.ProviderRef, isControl):
		f.Add("provider_ref", "contains invalid characters")
	}
	return f.Err("invalid payment")
}

// Refusal says why a payment of an order that is no longer payable was
// refused: the shop must give the money back (SPEC 3.3).
type Refusal string

// Refusals, one per way an order stops being payable.
const (
	RefusedHoldEnded = Refusal("hold_ended")   // confirmed, but its payment hold ended (the expiry sweep has not run yet)
	RefusedExpired   = Refusal("expired")      // the order expired
	RefusedCancelled = Refusal("cancelled")    // the order was cancelled
	RefusedRejected  = Refusal("rejected")     // the order was rejected
	RefusedPaid      = Refusal("already_paid") // the order was paid already, by another payment
)

// Refusal returns why a payment of o at t must be refused and refunded, or
// "" if o can be paid at t or is not decided yet (pending: the provider
// retries until it is). A confirmed order's hold ends at HoldUntil, as
// the expiry sweep sees it.
func (o *Order) Refusal(t time.Time) Refusal {
	switch o.Status {
	case StatusConfirmed:
		if o.HoldUntil != nil && !t.Before(*o.HoldUntil) {
			return RefusedHoldEnded
		}
	case StatusExpired:
		return RefusedExpired
	case StatusCancelled:
		return RefusedCancelled
	case StatusRejected:
		return RefusedRejected
	case StatusPaid:
		return RefusedPaid
	}
	return ""
}

// Pay marks a confirmed order paid at t. It returns ECONFLICT if the order
// is in any other status (pending: not decided yet; expired, cancelled,
// rejected: no longer payable; paid: paid already) or its payment hold
// ended at or before t (Refusal).
func (o *Order) Pay(t time.Time) error {
	if o.Status != StatusConfirmed {
		return Errorf(ECONFLICT, "order %s is %s: only a confirmed order can be paid", o.ID, o.Status)
	}
	if o.Refusal(t) == RefusedHoldEnded {
		return Errorf(ECONFLICT, "order %s: its payment hold ended at %s", o.ID, o.HoldUntil.UTC().Format(time.RFC3339))
	}
	o.Status = StatusPaid
	o.PaidAt = &t
	o.UpdatedAt = t
	return nil
}

// ValidateEdit checks a SKU after an admin's edit as a whole, with the
// same rules as a new SKU, and returns an EINVALID error naming every field
// at fault.
func (s *SKU) ValidateEdit() error {
	n := NewSKU{
		Name: s.Name, Price: &s.Price, Currency: s.Currency, Stock: &s.Stock,
		PerUserLimit: s.PerUserLimit, SaleStartsAt: s.SaleStartsAt, SaleEndsAt: s.SaleEndsAt,
		PaymentHoldSeconds: s.PaymentHoldSeconds,
	}
	if err := n.Validate(); err != nil {
		return Invalid("invalid SKU", ErrorFields(err)...)
	}
	return nil
}

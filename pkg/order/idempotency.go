package order

import "github.com/google/uuid"

// Idempotency is what the ingress remembers of a checkout sent with an
// Idempotency-Key: the hash of the request, to tell a retry from a different
// request that reuses the key, and the command it built, to republish it
// unchanged (same order id and number) if the first attempt may not have
// reached JetStream. Published is set once JetStream acknowledged it.
type Idempotency struct {
	RequestHash string  `json:"request_hash"`
	Command     Command `json:"command"`
	Published   bool    `json:"published"`
}

// StatusRank orders statuses along an order's life: pending 0, confirmed 1,
// the final ones 2. A status change never lowers it, so a reader that has
// seen rank r can ignore anything at or below r.
func StatusRank(s Status) int {
	switch {
	case s == StatusPending:
		return 0
	case s == StatusConfirmed:
		return 1
	case s.Final():
		return 2
	}
	return -1
}

// ParseStatus returns the status named s, or false if s names none.
func ParseStatus(s string) (Status, bool) {
	st := Status(s)
	return st, StatusRank(st) >= 0
}

// CheckoutFacts is what the database tells the ingress about a checkout
// before it accepts it: whether the address is the buyer's, and the order
// an earlier request with the same Idempotency-Key placed, if any.
type CheckoutFacts struct {
	AddressOK bool
	// Prior is the earlier order (id and number only), or nil.
	Prior *Order
	// PriorHash is the hash of the request that placed Prior ("" if
	// none was recorded).
	PriorHash string
	// Claim is the key's claim, when an earlier request with the key was
	// accepted and Prior is not written yet; or nil.
	Claim *KeyClaim
}

// KeyClaim is the durable record of a checkout accepted with an
// Idempotency-Key, written before its command is published: the order the
// key names, the hash of the request, and the order number it was given.
type KeyClaim struct {
	OrderID     uuid.UUID
	RequestHash string
	OrderNumber string
}

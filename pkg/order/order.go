package order

import (
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Status is where an order is in its life.
type Status string

// Order statuses. pending -> confirmed | rejected; confirmed -> paid |
// expired | cancelled; pending -> cancelled. paid, expired, cancelled and
// rejected are final.
const (
	StatusPending   Status = "pending"
	StatusConfirmed Status = "confirmed"
	StatusRejected  Status = "rejected"
	StatusPaid      Status = "paid"
	StatusExpired   Status = "expired"
	StatusCancelled Status = "cancelled"
)

// Final reports whether no further change can happen to an order in s.
func (s Status) Final() bool {
	switch s {
	case StatusRejected, StatusPaid, StatusExpired, StatusCancelled:
		return true
	}
	return false
}

// Holds reports whether an order in s holds stock.
func (s Status) Holds() bool { return s == StatusConfirmed || s == StatusPaid }

// RejectReason says why an order was rejected.
type RejectReason string

// Reasons for a rejection.
const (
	RejectOutOfStock       RejectReason = "out_of_stock"
	RejectLimitExceeded    RejectReason = "limit_exceeded"
	RejectSaleNotOpen      RejectReason = "sale_not_open"
	RejectSalePaused       RejectReason = "sale_paused"
	RejectSKUNotFound      RejectReason = "sku_not_found"
	RejectCurrencyMismatch RejectReason = "currency_mismatch"
	RejectTimeout          RejectReason = "reservation_timeout"
	// RejectProcessingFailed: the order's checkout could not be applied
	// and became a dead letter (it took no stock).
	RejectProcessingFailed RejectReason = "processing_failed"
)

// PaymentMethod is how a buyer pays.
type PaymentMethod string

// Supported payment methods.
const (
	PayCard           PaymentMethod = "card"
	PayWallet         PaymentMethod = "wallet"
	PayCashOnDelivery PaymentMethod = "cash_on_delivery"
)

// PaymentMethods lists the supported payment methods.
var PaymentMethods = []PaymentMethod{PayCard, PayWallet, PayCashOnDelivery}

// Valid reports whether m is supported.
func (m PaymentMethod) Valid() bool {
	for _, p := range PaymentMethods {
		if m == p {
			return true
		}
	}
	return false
}

// LineRequest is one requested line: a SKU and a quantity.
type LineRequest struct {
	SKUID    uuid.UUID `json:"sku_id"`
	Quantity int64     `json:"quantity"`
}

// Line is one line of an order with the price paid.
type Line struct {
	SKUID     uuid.UUID `json:"sku_id" db:"sku_id"`
	Name      string    `json:"name,omitempty" db:"name"`
	Quantity  int64     `json:"quantity" db:"quantity"`
	UnitPrice int64     `json:"unit_price" db:"unit_price"`
	LineTotal int64     `json:"line_total" db:"line_total"`
}

// Order is a buyer's order as clients and events see it.
type Order struct {
	ID            uuid.UUID     `json:"id" db:"id"`
	Number        string        `json:"order_number" db:"order_number"`
	UserID        string        `json:"user_id" db:"user_id"`
	AddressID     uuid.UUID     `json:"address_id" db:"address_id"`
	PaymentMethod PaymentMethod `json:"payment_method" db:"payment_method"`
	Status        Status        `json:"status" db:"status"`
	RejectReason  RejectReason  `json:"reject_reason,omitempty" db:"reject_reason"`
	RejectSKUs    []uuid.UUID   `json:"reject_skus,omitempty" db:"-"`
	Currency      string        `json:"currency,omitempty" db:"currency"`
	Lines         []Line        `json:"lines" db:"-"`
	Subtotal      int64         `json:"subtotal" db:"subtotal"`
	ShippingFee   int64         `json:"shipping_fee" db:"shipping_fee"`
	GrandTotal    int64         `json:"grand_total" db:"grand_total"`
	AcceptedAt    time.Time     `json:"accepted_at" db:"accepted_at"`
	DecidedAt     *time.Time    `json:"decided_at,omitempty" db:"decided_at"`
	HoldUntil     *time.Time    `json:"hold_until,omitempty" db:"hold_until"`
	PaidAt        *time.Time    `json:"paid_at,omitempty" db:"paid_at"`
	UpdatedAt     time.Time     `json:"updated_at" db:"updated_at"`
	// QueuePosition is, while the order is pending, about how many
	// commands are ahead of it in its partition (set by the ingress when
	// it answers; never stored).
	QueuePosition *int64 `json:"queue_position,omitempty" db:"-"`
}

// Price fills line totals, subtotal and grand total from the lines' unit
// prices and the shipping fee.
func (o *Order) Price() {
	o.Subtotal = 0
	for i := range o.Lines {
		o.Lines[i].LineTotal = o.Lines[i].UnitPrice * o.Lines[i].Quantity
		o.Subtotal += o.Lines[i].LineTotal
	}
	o.GrandTotal = o.Subtotal + o.ShippingFee
}

// NumberFor formats a human-readable, unique order number from the moment the
// order was accepted and a value of the order number sequence, which is
// unique across every ingress process: "FS-20261126-000001234".
func NumberFor(t time.Time, seq int64) string {
	return fmt.Sprintf("FS-%s-%09d", t.UTC().Format("20060102"), seq)
}

// IdempotentID derives the order id of a checkout from the user and the
// Idempotency-Key header, so that a retry of the same request, even after a
// crash and beyond JetStream's dedupe window, names the same order.
func IdempotentID(userID, key string) uuid.UUID {
	return uuid.NewSHA1(idempotencyNamespace, []byte(userID+"\x00"+key))
}

var idempotencyNamespace = uuid.MustParse("5b0c3a52-6a7e-4d39-9a0f-8f3f7f0d2c11")

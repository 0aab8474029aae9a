package order

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// IngressSubject is the JetStream subject of the orders the ingress decided
// itself (KindRecordRejection), in the commands stream but on no
// partition's subject: any worker records them, none waits for a partition.
const IngressSubject = "orders.cmd.ingress"

// SubjectOf returns the subject a command is published on: its partition's,
// or IngressSubject for a record of an ingress decision.
func SubjectOf(c Command) string {
	if c.Kind == KindRecordRejection {
		return IngressSubject
	}
	return Subject(c.Partition)
}

// Rejection is the body of a KindRecordRejection command: an order the
// ingress rejected without a trip through its partition, because a SKU of
// it was sold out (the partition would have rejected it out_of_stock at
// that moment: see redisstore's soldout.go). The command's Partition is the
// order's home, as for its checkout; its ID is RejectionCommandID of the
// order.
type Rejection struct {
	// Checkout is the order as the ingress placed it.
	Checkout Checkout `json:"checkout"`
	// Reason is why it was rejected: RejectOutOfStock.
	Reason RejectReason `json:"reason"`
	// SKUs are the SKUs the reason names, each a SKU of a line.
	SKUs []uuid.UUID `json:"skus"`
	// DecidedAt is when the ingress decided it.
	DecidedAt time.Time `json:"decided_at"`
}

// SKUVersion is a SKU's row version as a partition's transaction read it
// under the row lock or wrote it: what a sold-out marker records.
type SKUVersion struct {
	SKU     uuid.UUID
	Version int64
}

// RejectionCommandID is the command id of the record of an ingress
// rejection of order id: stable, so that JetStream drops a republished one
// within its dedupe window, and distinct from the id of the order's
// checkout command.
func RejectionCommandID(orderID uuid.UUID) uuid.UUID {
	return uuid.NewSHA1(orderID, []byte("ingress/rejected"))
}

// validate checks a rejection of an order with home partition p of n.
func (r *Rejection) validate(p, n int) error {
	if err := r.Checkout.validate(p, n); err != nil {
		return err
	}
	if r.Reason != RejectOutOfStock {
		return fmt.Errorf("reason %q: the ingress rejects only %s", r.Reason, RejectOutOfStock)
	}
	if len(r.SKUs) == 0 {
		return errors.New("no SKUs named")
	}
	for _, id := range r.SKUs {
		if !slices.ContainsFunc(r.Checkout.Lines, func(l LineRequest) bool { return l.SKUID == id }) {
			return fmt.Errorf("SKU %s is not a line of the order", id)
		}
	}
	if r.DecidedAt.IsZero() {
		return errors.New("no decision time")
	}
	return nil
}

// Rejected returns the rejected order: its lines those of the checkout
// whose SKUs skus knows (as a partition rejects: named, at the quoted price
// or else the SKU's current one), priced, with the reason and the SKUs it
// names. The order's currency is that of its first known SKU.
func (r *Rejection) Rejected(at time.Time, skus map[uuid.UUID]*SKU) *Order {
	k := &r.Checkout
	decided := r.DecidedAt.UTC().Truncate(time.Microsecond)
	o := &Order{
		ID: k.OrderID, Number: k.OrderNumber, UserID: k.UserID, AddressID: k.AddressID,
		PaymentMethod: k.PaymentMethod, Status: StatusRejected,
		RejectReason: r.Reason, RejectSKUs: slices.Clone(r.SKUs),
		Lines: []Line{}, ShippingFee: k.ShippingFee,
		AcceptedAt: at.UTC().Truncate(time.Microsecond), DecidedAt: &decided, UpdatedAt: decided,
	}
	for _, l := range k.Lines {
		s := skus[l.SKUID]
		if s == nil {
			continue
		}
		if o.Currency == "" {
			o.Currency = s.Currency
		}
		price := s.Price
		if q, ok := k.QuotedPrice(l.SKUID); ok {
			price = q
		}
		o.Lines = append(o.Lines, Line{SKUID: l.SKUID, Name: s.Name, Quantity: l.Quantity, UnitPrice: price})
	}
	o.Price()
	return o
}

// DecodeIngressEnvelope decodes and validates a message body of
// IngressSubject for n partitions: every command must be a
// KindRecordRejection. Errors are EMALFORMED or EINVALID, as for
// DecodeEnvelope.
func DecodeIngressEnvelope(data []byte, n int) ([]Command, error) {
	return decodeEnvelope(data, func(c *Command) error {
		if c.Kind != KindRecordRejection {
			return Errorf(EINVALID, "a %s command on %s", c.Kind, IngressSubject)
		}
		return c.Validate(c.Partition, n)
	})
}

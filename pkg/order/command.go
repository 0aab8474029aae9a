package order

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
)

// Kind names what a command asks a partition to do.
type Kind string

// Command kinds. Every stock change of a SKU is one of these, applied by the
// SKU's partition.
const (
	// KindCheckout places an order. When all its lines live in the command's
	// partition it is decided in one hop; otherwise that partition is the
	// order's home and coordinates reservations in the others.
	KindCheckout Kind = "checkout"
	// KindReserve takes the stock of an order's lines in one partition on
	// behalf of the order's home partition.
	KindReserve Kind = "reserve"
	// KindRelease gives back what an order holds in one partition.
	KindRelease Kind = "release"
	// KindRestock adds stock to a SKU.
	KindRestock Kind = "restock"
	// KindCancel cancels a pending or unpaid order at its home partition.
	KindCancel Kind = "cancel"
	// KindRecordRejection records an order the ingress decided itself
	// (rejection.go): no partition's command, it moves no stock and travels
	// on IngressSubject.
	KindRecordRejection Kind = "record_rejection"
)

// Command is one unit of work for a partition. Its ID is unique and stays
// the same across redeliveries and republishing, so that a partition applies
// it at most once.
type Command struct {
	ID        uuid.UUID `json:"id"`
	Kind      Kind      `json:"kind"`
	Partition int       `json:"partition"`
	At        time.Time `json:"at"`

	Checkout *Checkout `json:"checkout,omitempty"`
	Reserve  *Reserve  `json:"reserve,omitempty"`
	Release  *Release  `json:"release,omitempty"`
	Restock  *Restock  `json:"restock,omitempty"`
	Cancel   *Cancel   `json:"cancel,omitempty"`

	Rejection *Rejection `json:"rejection,omitempty"`
}

// Checkout is the body of a checkout command: everything the ingress checked
// and snapshotted. Prices, the ingress's quote of each SKU's unit price when
// it accepted the order, are what the order costs: an order accepted before
// a price change keeps the old price. A SKU without a quoted price (a
// command from an ingress that quotes none) is priced by the partition at
// the SKU's price when it decides.
type Checkout struct {
	OrderID        uuid.UUID     `json:"order_id"`
	OrderNumber    string        `json:"order_number"`
	UserID         string        `json:"user_id"`
	AddressID      uuid.UUID     `json:"address_id"`
	PaymentMethod  PaymentMethod `json:"payment_method"`
	Lines          []LineRequest `json:"lines"`
	ShippingFee    int64         `json:"shipping_fee"`
	IdempotencyKey string        `json:"idempotency_key,omitempty"`
	RequestHash    string        `json:"request_hash,omitempty"`
	FromCart       bool          `json:"from_cart,omitempty"`
	// Prices maps SKU ids of Lines to their quoted unit prices.
	Prices map[uuid.UUID]int64 `json:"prices,omitempty"`
}

// QuotedPrice returns the quoted unit price of a SKU of the order, if any.
func (k *Checkout) QuotedPrice(sku uuid.UUID) (int64, bool) {
	p, ok := k.Prices[sku]
	return p, ok
}

// Reserve asks a partition to take an order's lines of that partition.
type Reserve struct {
	OrderID uuid.UUID     `json:"order_id"`
	UserID  string        `json:"user_id"`
	Home    int           `json:"home"`
	Lines   []LineRequest `json:"lines"`
	// Prices are the quoted unit prices of Lines' SKUs (see Checkout).
	Prices map[uuid.UUID]int64 `json:"prices,omitempty"`
}

// Release asks a partition to give back what an order holds there.
type Release struct {
	OrderID uuid.UUID `json:"order_id"`
	Reason  string    `json:"reason"`
}

// Restock adds units to a SKU.
type Restock struct {
	SKUID    uuid.UUID `json:"sku_id"`
	Quantity int64     `json:"quantity"`
}

// Cancel asks an order's home partition to cancel it.
type Cancel struct {
	OrderID uuid.UUID `json:"order_id"`
	UserID  string    `json:"user_id"`
}

// Envelope is the body of one JetStream message on a partition's subject: a
// batch of commands for that partition, so that one fsync can carry many.
type Envelope struct {
	Commands []Command `json:"commands"`
}

// MaxEnvelopeCommands bounds the commands in one message.
const MaxEnvelopeCommands = 4096

// Subject returns the JetStream subject of partition p's commands.
func Subject(p int) string { return fmt.Sprintf("orders.cmd.%d", p) }

// EncodeEnvelope encodes commands as one message body.
func EncodeEnvelope(cmds ...Command) ([]byte, error) {
	return json.Marshal(Envelope{Commands: cmds})
}

// DecodeEnvelope decodes and validates a message body for partition p of n.
// Any error is EMALFORMED or EINVALID: the message is poison and retrying it
// cannot help.
func DecodeEnvelope(data []byte, p, n int) ([]Command, error) {
	return decodeEnvelope(data, func(c *Command) error {
		if c.Kind == KindRecordRejection {
			return Errorf(EINVALID, "a %s command on partition %d's subject", KindRecordRejection, p)
		}
		return c.Validate(p, n)
	})
}

// decodeEnvelope decodes a message body strictly (no unknown fields, no
// trailing data, 1 to MaxEnvelopeCommands commands) and checks each
// command with valid.
func decodeEnvelope(data []byte, valid func(*Command) error) ([]Command, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var env Envelope
	if err := dec.Decode(&env); err != nil {
		return nil, Errorf(EMALFORMED, "command envelope: %v", err)
	}
	if dec.More() {
		return nil, Errorf(EMALFORMED, "command envelope: trailing data")
	}
	if len(env.Commands) == 0 || len(env.Commands) > MaxEnvelopeCommands {
		return nil, Errorf(EINVALID, "command envelope holds %d commands", len(env.Commands))
	}
	for i := range env.Commands {
		if err := valid(&env.Commands[i]); err != nil {
			return nil, fmt.Errorf("command %d: %w", i, err)
		}
	}
	return env.Commands, nil
}

// Validate checks that c is well formed and belongs to partition p of n.
func (c *Command) Validate(p, n int) error {
	bad := func(format string, args ...any) error {
		return Errorf(EINVALID, "%s command %s: %s", c.Kind, c.ID, fmt.Sprintf(format, args...))
	}
	if c.ID == uuid.Nil {
		return bad("no id")
	}
	if c.Partition != p || p < 0 || p >= n {
		return bad("partition %d on the subject of partition %d of %d", c.Partition, p, n)
	}
	bodies := 0
	for _, b := range []bool{c.Checkout != nil, c.Reserve != nil, c.Release != nil, c.Restock != nil, c.Cancel != nil, c.Rejection != nil} {
		if b {
			bodies++
		}
	}
	if bodies != 1 {
		return bad("%d bodies", bodies)
	}
	switch c.Kind {
	case KindCheckout:
		if c.Checkout == nil {
			return bad("no checkout")
		}
		if err := c.Checkout.validate(p, n); err != nil {
			return bad("%v", err)
		}
	case KindRecordRejection:
		if c.Rejection == nil {
			return bad("no rejection")
		}
		if err := c.Rejection.validate(p, n); err != nil {
			return bad("%v", err)
		}
	case KindReserve:
		r := c.Reserve
		if r == nil || r.OrderID == uuid.Nil || r.UserID == "" || r.Home < 0 || r.Home >= n {
			return bad("missing order, user or home")
		}
		if err := ValidateLines(r.Lines, "lines"); err != nil {
			return bad("%v", err)
		}
		for _, l := range r.Lines {
			if Partition(l.SKUID, n) != p {
				return bad("SKU %s is not in this partition", l.SKUID)
			}
		}
		if err := validPrices(r.Prices, r.Lines); err != nil {
			return bad("%v", err)
		}
	case KindRelease:
		if c.Release == nil || c.Release.OrderID == uuid.Nil {
			return bad("no order")
		}
	case KindRestock:
		r := c.Restock
		if r == nil || r.SKUID == uuid.Nil || r.Quantity < 1 || r.Quantity > MaxStock {
			return bad("restock needs a SKU and a quantity from 1 to %d", MaxStock)
		}
		if Partition(r.SKUID, n) != p {
			return bad("SKU %s is not in this partition", r.SKUID)
		}
	case KindCancel:
		if c.Cancel == nil || c.Cancel.OrderID == uuid.Nil || c.Cancel.UserID == "" {
			return bad("no order or user")
		}
	default:
		return bad("unknown kind")
	}
	return nil
}

// validate checks a checkout placed at home partition p of n.
func (k *Checkout) validate(p, n int) error {
	if err := k.ValidateShape(); err != nil {
		return err
	}
	if home := HomePartition(k.Lines, n); home != p {
		return fmt.Errorf("home partition is %d", home)
	}
	return nil
}

// ValidateShape checks what the ingress checks of a checkout before it
// accepts it, whatever partition it was sent to: an order, a user, an
// address and a number, a supported payment method, a shipping fee, valid
// lines and quoted prices.
func (k *Checkout) ValidateShape() error {
	if k.OrderID == uuid.Nil || k.UserID == "" || k.AddressID == uuid.Nil || k.OrderNumber == "" {
		return errors.New("missing order, user, address or number")
	}
	if !k.PaymentMethod.Valid() {
		return fmt.Errorf("payment method %q", k.PaymentMethod)
	}
	if k.ShippingFee < 0 || k.ShippingFee > MaxPrice {
		return fmt.Errorf("shipping fee %d", k.ShippingFee)
	}
	if err := ValidateLines(k.Lines, "lines"); err != nil {
		return err
	}
	return validPrices(k.Prices, k.Lines)
}

// validPrices checks quoted prices: each of a SKU of lines, from 0 to
// MaxPrice.
func validPrices(prices map[uuid.UUID]int64, lines []LineRequest) error {
	for id, price := range prices {
		if price < 0 || price > MaxPrice || !slices.ContainsFunc(lines, func(l LineRequest) bool { return l.SKUID == id }) {
			return fmt.Errorf("quoted price %d of SKU %s", price, id)
		}
	}
	return nil
}

// HomePartition returns the partition that coordinates an order: that of its
// first line. For the flash-sale case (all lines in one partition) it is the
// only partition involved.
func HomePartition(lines []LineRequest, n int) int {
	return Partition(lines[0].SKUID, n)
}

// SplitByPartition groups lines by partition, keeping their order.
func SplitByPartition(lines []LineRequest, n int) map[int][]LineRequest {
	out := make(map[int][]LineRequest)
	for _, l := range lines {
		p := Partition(l.SKUID, n)
		out[p] = append(out[p], l)
	}
	return out
}

package order

import (
	"time"

	"github.com/google/uuid"
)

// EventType is the CloudEvents type of an event the service emits.
type EventType string

// Event types, published on ORDER_EVENTS as orders.events.<type>.
const (
	EventAccepted     EventType = "order.accepted"
	EventConfirmed    EventType = "order.confirmed"
	EventRejected     EventType = "order.rejected"
	EventCancelled    EventType = "order.cancelled"
	EventPaid         EventType = "order.paid"
	EventExpired      EventType = "order.expired"
	EventStockChanged EventType = "stock.changed"
	// EventPaymentRefused is no status change: a valid payment of an order
	// that was no longer payable was refused, and the shop must refund it.
	EventPaymentRefused EventType = "order.payment_refused"
)

// EventSource is the CloudEvents source of every event.
const EventSource = "/orderd"

// Event is a CloudEvents 1.0 JSON event.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              uuid.UUID `json:"id"`
	Source          string    `json:"source"`
	Type            EventType `json:"type"`
	Time            time.Time `json:"time"`
	Subject         string    `json:"subject"`
	DataContentType string    `json:"datacontenttype"`
	Data            any       `json:"data"`
}

// StatusEvent returns the event type announcing that an order reached s.
func StatusEvent(s Status) EventType {
	switch s {
	case StatusConfirmed:
		return EventConfirmed
	case StatusRejected:
		return EventRejected
	case StatusCancelled:
		return EventCancelled
	case StatusPaid:
		return EventPaid
	case StatusExpired:
		return EventExpired
	}
	return EventAccepted
}

// OrderEvent returns the event announcing o's current status. Its id is
// derived from the order and the type, so it is the same however often the
// change is retried, and an order has at most one event of each type.
func OrderEvent(o *Order, at time.Time) Event {
	t := StatusEvent(o.Status)
	return Event{
		SpecVersion:     "1.0",
		ID:              uuid.NewSHA1(o.ID, []byte(t)),
		Source:          EventSource,
		Type:            t,
		Time:            at.UTC(),
		Subject:         o.ID.String(),
		DataContentType: "application/json",
		Data:            o,
	}
}

// StockChange is the data of a stock.changed event.
type StockChange struct {
	SKUID     uuid.UUID `json:"sku_id"`
	Stock     int64     `json:"stock"`
	UnitsSold int64     `json:"units_sold"`
	Delta     int64     `json:"delta"`
}

// StockEvent returns a stock.changed event with a fresh id.
func StockEvent(c StockChange, at time.Time) Event {
	return Event{
		SpecVersion:     "1.0",
		ID:              uuid.New(),
		Source:          EventSource,
		Type:            EventStockChanged,
		Time:            at.UTC(),
		Subject:         c.SKUID.String(),
		DataContentType: "application/json",
		Data:            c,
	}
}

// EventSubject returns the JetStream subject of an event type.
func EventSubject(t EventType) string { return "orders.events." + string(t) }

// RefusedPayment is the data of an order.payment_refused event: the order
// as it is (the refusal changed nothing) and the payment it refused.
type RefusedPayment struct {
	Order
	Payment RefusedPaymentInfo `json:"refused_payment"`
}

// RefusedPaymentInfo is a refused payment, for the shop to refund.
type RefusedPaymentInfo struct {
	Amount      int64     `json:"amount"`
	Currency    string    `json:"currency"`
	ProviderRef string    `json:"provider_ref"`
	Reason      Refusal   `json:"reason"`
	ReceivedAt  time.Time `json:"received_at"`
}

// PaymentRefusedEvent returns the order.payment_refused event of payment p
// of o, refused at at for why. Its id is derived from the order and the
// provider's reference, so the provider's retries of one payment make one
// event, and every other payment its own.
func PaymentRefusedEvent(o *Order, p *Payment, why Refusal, at time.Time) Event {
	return Event{
		SpecVersion:     "1.0",
		ID:              uuid.NewSHA1(o.ID, []byte(string(EventPaymentRefused)+"\x00"+p.ProviderRef)),
		Source:          EventSource,
		Type:            EventPaymentRefused,
		Time:            at.UTC(),
		Subject:         o.ID.String(),
		DataContentType: "application/json",
		Data: RefusedPayment{Order: *o, Payment: RefusedPaymentInfo{
			Amount: p.Amount, Currency: p.Currency, ProviderRef: p.ProviderRef, Reason: why, ReceivedAt: at.UTC(),
		}},
	}
}

package natsbus

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
)

// SKUChangedSubject carries the SKU notes: right after an admin change of a
// SKU (pause, resume, PATCH) is committed, the ingress process that made it
// publishes the SKU's id (its text form, nothing else) on this core NATS
// subject, and every ingress process drops what it cached of that SKU. Like
// the status notes it is a wake-up, not a record: a note lost while a
// connection is down only leaves a process on its cache's TTL.
const SKUChangedSubject = "orders.skus.changed"

// SKUNotes publishes and receives the SKU notes on one connection.
type SKUNotes struct {
	nc  *nats.Conn
	log *slog.Logger
}

// NewSKUNotes returns SKU notes on nc.
func NewSKUNotes(nc *nats.Conn, log *slog.Logger) *SKUNotes {
	if log == nil {
		log = slog.Default()
	}
	return &SKUNotes{nc: nc, log: log}
}

// SKUChanged publishes that SKU id changed. It is best effort (the
// connection buffers the note while it reconnects); an error means the
// note was not sent, and the other processes see the change within their
// cache's TTL.
func (n *SKUNotes) SKUChanged(id uuid.UUID) error {
	if err := n.nc.Publish(SKUChangedSubject, []byte(id.String())); err != nil {
		return fmt.Errorf("sku note %s: %w", id, err)
	}
	return nil
}

// Subscribe calls changed with the id of every SKU note, this process's own
// included, on the connection's delivery goroutine: changed must not block.
// A note whose body is not a SKU id is logged and skipped. The subscription
// is known to the server when Subscribe returns; Unsubscribe (or closing
// the connection) ends it.
func (n *SKUNotes) Subscribe(changed func(uuid.UUID)) (*nats.Subscription, error) {
	sub, err := n.nc.Subscribe(SKUChangedSubject, func(m *nats.Msg) {
		id, err := uuid.ParseBytes(m.Data)
		if err != nil {
			n.log.Warn("sku note without a SKU id", "len", len(m.Data))
			return
		}
		changed(id)
	})
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", SKUChangedSubject, err)
	}
	if err := n.nc.FlushTimeout(5 * time.Second); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: flush: %w", SKUChangedSubject, err)
	}
	return sub, nil
}

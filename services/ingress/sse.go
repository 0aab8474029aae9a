package ingress

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/flashsale/orderd/pkg/order"
)

// sseHeartbeat is how often an event stream sends a comment to keep
// proxies from closing it, and re-reads the status cache in case an event
// was missed; a variable so that tests can shorten it.
var sseHeartbeat = 15 * time.Second

// sseQueueEvery is how often a pending order's stream looks at its place
// in line; a variable so that tests can shorten it.
var sseQueueEvery = time.Second

// sseRetry is the reconnection delay the stream suggests to EventSource.
const sseRetry = 2 * time.Second

// orderEvents is GET /v1/orders/{id}/events: the caller's order as
// Server-Sent Events. It sends the current status first, then each later
// one, and closes after a final status (paid, expired, cancelled,
// rejected). Each event is
//
//	id: <status>
//	event: <status>
//	data: <the order as JSON>
//
// While the order is pending, its place in line is sent as it changes
// (at most once per sseQueueEvery), as events without an id, so that they
// do not move Last-Event-ID:
//
//	event: queue
//	data: {"queue_position": 312}
//
// A status is sent at most once and statuses only move forward (pending,
// confirmed, then a final one), so the status is the event id: a client
// reconnecting with Last-Event-ID gets only what came after it, and one
// that already saw a final status gets 204 No Content, which tells
// EventSource to stop reconnecting. A Last-Event-ID that names no status is
// 400. A comment every sseHeartbeat keeps the connection alive.
//
// The stream takes one of the caller's places (streams.go: 429 past the
// caps), every write must go through within streamWriteTimeout, and the
// stream ends when the caller's token expires, with an event
//
//	event: token_expired
//
// after which the client reconnects with a fresh token and Last-Event-ID.
func (s *Server) orderEvents(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	seen := -1 // the rank of the last status the client has
	if v := strings.TrimSpace(r.Header.Get("Last-Event-ID")); v != "" {
		st, ok := order.ParseStatus(v)
		if !ok {
			return order.Errorf(order.EMALFORMED, "Last-Event-ID %q is not an event id of this stream (a status)", truncate(v, 64))
		}
		seen = order.StatusRank(st)
	}
	st, err := s.openStream(r)
	if err != nil {
		return err
	}
	defer st.close()
	ctx, user := st.ctx, principal(r.Context()).UserID
	// Subscribe before reading, so that no change falls in between.
	changes, stop := s.watch(id)
	defer stop()
	o, ticket, err := s.ownedOrderInLine(ctx, user, id)
	if err != nil {
		return err
	}
	if seen == order.StatusRank(order.StatusPaid) { // the client saw a final status
		w.Header().Set("Cache-Control", "no-store")
		w.WriteHeader(http.StatusNoContent)
		return nil
	}

	sw := newSSEWriter(w, sseHeartbeat)
	if sw.start() != nil {
		return nil
	}
	// send writes o if it is news to the client, and reports whether the
	// stream is over (a final status sent, or the client gone).
	send := func(o *order.Order) (done bool) {
		rank := order.StatusRank(o.Status)
		if rank <= seen {
			return false
		}
		frame, err := sseFrame(o)
		if err != nil || sw.send(frame) != nil {
			return true
		}
		seen = rank
		return o.Status.Final()
	}
	if send(o) {
		return nil
	}
	// sendPlace writes the order's place in line while it is pending and
	// the place changed; it reports whether the client is gone.
	place := o.QueuePosition
	sendPlace := func() (gone bool) {
		if seen > order.StatusRank(order.StatusPending) {
			return false
		}
		n, ok := s.queue.ahead(ctx, ticket)
		if !ok || (place != nil && *place == n) {
			return false
		}
		place = &n
		return sw.send(fmt.Appendf(nil, "event: queue\ndata: {\"queue_position\":%d}\n\n", n)) != nil
	}
	var queueTick <-chan time.Time
	if ticket.N != 0 {
		t := time.NewTicker(sseQueueEvery)
		defer t.Stop()
		queueTick = t.C
	}
	beat := time.NewTicker(sseHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-queueTick:
			if sendPlace() {
				return nil
			}
		case n, ok := <-changes:
			if !ok { // the waiter shut down (the server is stopping)
				return nil
			}
			if send(n) {
				return nil
			}
		case <-beat.C:
			if n, err := s.Status.OrderStatus(ctx, id); err == nil && n.UserID == user {
				if send(n) {
					return nil
				}
			}
			if sw.send([]byte(": heartbeat\n\n")) != nil {
				return nil
			}
		case <-ctx.Done():
			if st.expired() {
				sw.tokenExpired()
			}
			return nil
		}
	}
}

// sseFrame is one event: the order's status as id and event name, the
// order as data (one line: JSON never holds a raw newline).
func sseFrame(o *order.Order) ([]byte, error) {
	c := *o
	if c.Lines == nil {
		c.Lines = []order.Line{}
	}
	data, err := json.Marshal(&c)
	if err != nil {
		return nil, err
	}
	return fmt.Appendf(nil, "id: %s\nevent: %s\ndata: %s\n\n", o.Status, o.Status, data), nil
}

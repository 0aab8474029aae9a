package ingress

import (
	"context"
	"math"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/redisstore"
)

// Order list page sizes.
const (
	defaultOrderPage = 20
	maxOrderPage     = 100
)

// MaxWait bounds the ?wait= of a long-poll.
const MaxWait = 30 * time.Second

// statusRecheck is how often a long-poll re-reads the status cache while
// it waits, in case an event was missed (NATS reconnecting) or no waiter is
// wired; a variable so that tests can shorten it.
var statusRecheck = 5 * time.Second

// orderPage is one page of GET /v1/orders. NextCursor is the cursor of the
// next page, or null on the last one.
type orderPage struct {
	Items      []order.Order `json:"items"`
	NextCursor *string       `json:"next_cursor"`
}

// errNoOrder is the answer for an order that does not exist or is another
// user's: the two are indistinguishable.
func errNoOrder(id uuid.UUID) error { return order.Errorf(order.ENOTFOUND, "no order %s", id) }

// ownedOrder returns the caller's order id: from the Redis status cache
// (cheap: pollers never reach PostgreSQL while the order is cached), else
// from PostgreSQL, whose answer then goes into the cache. A missing order
// and another user's are both ENOTFOUND. When Redis fails, it reads
// PostgreSQL alone. A pending order carries its queue position, when
// known.
func (s *Server) ownedOrder(ctx context.Context, user string, id uuid.UUID) (*order.Order, error) {
	o, _, err := s.ownedOrderInLine(ctx, user, id)
	return o, err
}

// ownedOrderInLine is ownedOrder, also returning the order's ticket in its
// partition's line (zero if it has none).
func (s *Server) ownedOrderInLine(ctx context.Context, user string, id uuid.UUID) (*order.Order, redisstore.Ticket, error) {
	o, t, err := s.storedOrder(ctx, user, id)
	if err != nil || s.Waiter == nil {
		return o, t, err
	}
	// The events can overtake the status cache: never answer a status
	// older than one this process has already seen (and may have answered).
	if r := s.Waiter.Recent(id); r != nil && r.UserID == user && order.StatusRank(r.Status) > order.StatusRank(o.Status) {
		c := *r
		return &c, redisstore.Ticket{}, nil
	}
	return o, t, nil
}

// storedOrder reads the caller's order from the status cache, then from
// PostgreSQL.
func (s *Server) storedOrder(ctx context.Context, user string, id uuid.UUID) (*order.Order, redisstore.Ticket, error) {
	o, t, err := s.Status.OrderInLine(ctx, id)
	switch order.ErrorCode(err) {
	case "":
		if o.UserID != user {
			return nil, redisstore.Ticket{}, errNoOrder(id)
		}
		if o.Status == order.StatusPending {
			s.placeInLine(ctx, o, t)
		}
		return o, t, nil
	case order.ENOTFOUND:
	default:
		s.log.WarnContext(ctx, "order status: cache unavailable, reading the database", "order", id, "err", err)
	}
	o, err = s.Orders.Order(ctx, id)
	if order.ErrorCode(err) == order.ENOTFOUND {
		return nil, redisstore.Ticket{}, errNoOrder(id)
	}
	if err != nil {
		return nil, redisstore.Ticket{}, err
	}
	if o.UserID != user {
		return nil, redisstore.Ticket{}, errNoOrder(id)
	}
	if err := s.Status.CacheOrder(ctx, o); err != nil {
		s.log.DebugContext(ctx, "order status: could not cache", "order", id, "err", err)
	}
	return o, redisstore.Ticket{}, nil
}

// placeInLine sets a pending order's queue position from its ticket t,
// when it is known.
func (s *Server) placeInLine(ctx context.Context, o *order.Order, t redisstore.Ticket) {
	if n, ok := s.queue.ahead(ctx, t); ok {
		o.QueuePosition = &n
	}
}

// parseWait reads ?wait=: a Go duration ("10s") or a number of seconds
// ("10", "2.5"), from 0 to MaxWait. Absent or empty is 0.
func parseWait(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil || math.IsNaN(secs) || math.IsInf(secs, 0) || secs > MaxWait.Seconds() {
			return 0, invalidWait()
		}
		d = time.Duration(secs * float64(time.Second))
	}
	if d < 0 || d > MaxWait {
		return 0, invalidWait()
	}
	return d, nil
}

// parseSince reads ?since=, the status the long-polling client last saw;
// absent is pending.
func parseSince(r *http.Request) (order.Status, error) {
	v := r.URL.Query().Get("since")
	if v == "" {
		return order.StatusPending, nil
	}
	st, ok := order.ParseStatus(v)
	if !ok {
		return "", order.Invalid("invalid since", order.FieldError{Field: "since",
			Detail: "must be an order status: pending, confirmed, paid, rejected, expired or cancelled"})
	}
	return st, nil
}

func invalidWait() error {
	return order.Invalid("invalid wait", order.FieldError{Field: "wait",
		Detail: "must be a duration such as 10s, or a number of seconds, from 0 to 30s"})
}

// getOrder is GET /v1/orders/{id}: the caller's order, its status and (once
// decided) totals. Right after the 202 it answers pending: the ingress
// cached the pending order before publishing it. With ?wait=D it long-polls
// until the order has moved past the status the client last saw, named by
// ?since= (default pending: a buyer waits for the decision), or after D with
// its status then. An order already past it is answered at once, so a
// decision that landed before the poll arrived is not held back; a client
// that saw confirmed and waits for the payment asks ?since=confirmed.
//
// A long-poll takes one of the caller's stream places (streams.go: 429
// past the caps) and waits no longer than the caller's token is valid:
// at its expiry it answers the status then, and the client polls again
// with a fresh token.
func (s *Server) getOrder(w http.ResponseWriter, r *http.Request) error {
	id, err := pathUUID(r, "id")
	if err != nil {
		return err
	}
	wait, err := parseWait(r)
	if err != nil {
		return err
	}
	since, err := parseSince(r)
	if err != nil {
		return err
	}
	ctx, user := r.Context(), principal(r.Context()).UserID
	if wait == 0 {
		o, err := s.ownedOrder(ctx, user, id)
		if err != nil {
			return err
		}
		writeOrder(w, http.StatusOK, o)
		return nil
	}
	st, err := s.openStream(r)
	if err != nil {
		return err
	}
	defer st.close()
	if !st.exp.IsZero() {
		wait = min(wait, time.Until(st.exp))
	}
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(wait + streamWriteTimeout))
	// Subscribe before reading, so that no change falls in between.
	changes, stop := s.watch(id)
	defer stop()
	o, err := s.ownedOrder(ctx, user, id)
	if err != nil {
		return err
	}
	if !o.Status.Final() && order.StatusRank(o.Status) <= order.StatusRank(since) {
		o, err = s.awaitChange(ctx, user, o, changes, wait)
		if err != nil {
			return err
		}
	}
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	writeOrder(w, http.StatusOK, o)
	return nil
}

// watch subscribes to changes of order id, or returns a nil channel when no
// Waiter is wired (the callers then re-read the cache periodically).
func (s *Server) watch(id uuid.UUID) (<-chan *order.Order, func()) {
	if s.Waiter == nil {
		return nil, func() {}
	}
	return s.Waiter.Wait(id)
}

// awaitChange waits up to d for order o to reach a later status than it
// has: an event from the Waiter, or a periodic re-read of the cache, tells.
// It returns the order as it is then (re-read when the time is up).
func (s *Server) awaitChange(ctx context.Context, user string, o *order.Order, changes <-chan *order.Order, d time.Duration) (*order.Order, error) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	recheck := time.NewTicker(statusRecheck)
	defer recheck.Stop()
	rank := order.StatusRank(o.Status)
	for {
		select {
		case n, ok := <-changes:
			if !ok { // the waiter shut down: answer what is known now
				return s.ownedOrder(ctx, user, o.ID)
			}
			if order.StatusRank(n.Status) > rank {
				c := *n
				return &c, nil
			}
		case <-recheck.C:
			n, err := s.Status.OrderStatus(ctx, o.ID)
			if err == nil && order.StatusRank(n.Status) > rank {
				return n, nil
			}
		case <-timer.C:
			return s.ownedOrder(ctx, user, o.ID)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// writeOrder answers an order, never cached by intermediaries.
func writeOrder(w http.ResponseWriter, status int, o *order.Order) {
	if o.Lines == nil {
		o.Lines = []order.Line{}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, o)
}

// listOrders is GET /v1/orders?limit=&cursor=: the caller's orders, newest
// first, a page at a time (keyset pagination on accepted_at and id; the
// cursor is opaque). Decided orders come from PostgreSQL; orders still
// pending, which no partition has written yet, come from the caller's
// index of recent orders in Redis and are merged in at their place.
func (s *Server) listOrders(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	var f order.Fields
	limit := defaultOrderPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxOrderPage {
			f.Add("limit", "must be an integer from 1 to %d", maxOrderPage)
		}
		limit = n
	}
	cursor := q.Get("cursor")
	var after *order.OrderCursor
	if cursor != "" {
		c, err := order.ParseOrderCursor(cursor)
		if err != nil {
			f = append(f, order.ErrorFields(err)...)
		}
		after = &c
	}
	if err := f.Err("invalid query parameters"); err != nil {
		return err
	}
	ctx, user := r.Context(), principal(r.Context()).UserID
	items, next, err := s.Orders.OrdersByUser(ctx, user, cursor, limit)
	if err != nil {
		return err
	}
	recent, err := s.Status.RecentOrders(ctx, user, maxOrderPage)
	if err != nil {
		s.log.WarnContext(ctx, "list orders: cannot read pending orders from the cache", "err", err)
	}
	items, next = mergePending(items, next, recent, after, limit)
	page := orderPage{Items: items}
	if next != "" {
		page.NextCursor = &next
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, page)
	return nil
}

// mergePending merges the pending orders among recent (cached, not yet in
// PostgreSQL) into a page of orders from PostgreSQL (items, with next the
// cursor of the page after them), keeping the list's order and the page
// size. Only pending orders after the page's cursor (nil for the first
// page) take part, and an order both lists hold is shown once. Because a
// pending order carries the same accepted_at that the partition writes, it
// sits at the same place in the list before and after it is decided.
func mergePending(items []order.Order, next string, recent []*order.Order, after *order.OrderCursor, limit int) ([]order.Order, string) {
	seen := make(map[uuid.UUID]bool, len(items))
	for _, o := range items {
		seen[o.ID] = true
	}
	merged := false
	for _, o := range recent {
		if o.Status != order.StatusPending || seen[o.ID] || (after != nil && !after.Before(o)) {
			continue
		}
		seen[o.ID] = true
		if o.Lines == nil {
			o.Lines = []order.Line{}
		}
		items = append(items, *o)
		merged = true
	}
	if !merged {
		return items, next
	}
	slices.SortFunc(items, func(a, b order.Order) int {
		switch {
		case order.CursorOf(&a).Before(&b):
			return -1
		case order.CursorOf(&b).Before(&a):
			return 1
		}
		return 0
	})
	// A pending order older than a full page's last is cut here and comes
	// on a later page, after the cursor of this page's last order.
	if len(items) > limit {
		items = items[:limit]
		next = order.CursorOf(&items[limit-1]).String()
	}
	return items, next
}

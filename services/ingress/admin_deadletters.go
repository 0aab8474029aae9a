package ingress

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// Dead letter pages.
const (
	defaultDeadLetterPage = 50
	maxDeadLetterPage     = 500
)

// adminRoutes registers the operators' routes of a running sale: dead
// letters and reconciliation.
func (s *Server) adminRoutes() {
	s.handle("GET /v1/admin/dead-letters", s.admin(s.listDeadLetters))
	s.handle("POST /v1/admin/dead-letters/{id}/replay", s.adminWriter(s.replayDeadLetter))
	s.handle("GET /v1/admin/reconcile", s.admin(s.reconcile))
}

// deadLetterView is a dead letter as the admin API shows it.
type deadLetterView struct {
	ID         int64            `json:"id"`
	Partition  int              `json:"partition"`
	Subject    string           `json:"subject"`
	StreamSeq  uint64           `json:"stream_seq"`
	Reason     string           `json:"reason"`
	LastError  string           `json:"last_error"`
	Deliveries int64            `json:"deliveries"`
	CreatedAt  time.Time        `json:"created_at"`
	ReplayedAt *time.Time       `json:"replayed_at"`
	Commands   []commandSummary `json:"commands"`
	// Payload is the message body when it is not a command envelope
	// (poison), cut to 1 KiB.
	Payload *string `json:"payload,omitempty"`
}

// commandSummary is one command of a dead letter, in brief.
type commandSummary struct {
	ID      uuid.UUID           `json:"id"`
	Kind    order.Kind          `json:"kind"`
	OrderID *uuid.UUID          `json:"order_id,omitempty"`
	UserID  string              `json:"user_id,omitempty"`
	Lines   []order.LineRequest `json:"lines,omitempty"`
}

// deadLetterPage is a page of dead letters, newest first.
type deadLetterPage struct {
	Items      []deadLetterView `json:"items"`
	NextBefore *int64           `json:"next_before"`
}

// replayAnswer is the answer of a replay.
type replayAnswer struct {
	DeadLetter deadLetterView `json:"dead_letter"`
	// Replayed is true when this request published the payload, false
	// when an earlier replay did.
	Replayed bool `json:"replayed"`
}

func viewDeadLetter(d *postgres.DeadLetter) deadLetterView {
	v := deadLetterView{
		ID: d.ID, Partition: d.Partition, Subject: d.Subject, StreamSeq: d.StreamSeq, Reason: d.Reason,
		LastError: d.LastError, Deliveries: d.Deliveries, CreatedAt: d.CreatedAt.UTC(), ReplayedAt: d.ReplayedAt,
		Commands: []commandSummary{},
	}
	var env order.Envelope
	if err := json.Unmarshal(d.Payload, &env); err != nil || len(env.Commands) == 0 {
		p := string(d.Payload)
		if len(p) > 1024 {
			p = p[:1024]
		}
		if !utf8.ValidString(p) {
			p = strconv.QuoteToASCII(p)
		}
		v.Payload = &p
		return v
	}
	for _, c := range env.Commands {
		sum := commandSummary{ID: c.ID, Kind: c.Kind}
		switch {
		case c.Checkout != nil:
			sum.OrderID, sum.UserID, sum.Lines = &c.Checkout.OrderID, c.Checkout.UserID, c.Checkout.Lines
		case c.Reserve != nil:
			sum.OrderID, sum.UserID, sum.Lines = &c.Reserve.OrderID, c.Reserve.UserID, c.Reserve.Lines
		case c.Release != nil:
			sum.OrderID = &c.Release.OrderID
		case c.Cancel != nil:
			sum.OrderID, sum.UserID = &c.Cancel.OrderID, c.Cancel.UserID
		case c.Restock != nil:
			sum.Lines = []order.LineRequest{{SKUID: c.Restock.SKUID, Quantity: c.Restock.Quantity}}
		}
		v.Commands = append(v.Commands, sum)
	}
	return v
}

// listDeadLetters is GET /v1/admin/dead-letters (admin): dead letters,
// newest first, ?limit= (1 to 500, default 50) per page, ?before= the
// next_before of the previous page.
func (s *Server) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	if s.DeadLetters == nil {
		return order.Errorf(order.EUNAVAILABLE, "dead letters are not available on this process")
	}
	q := r.URL.Query()
	var f order.Fields
	before := int64(0)
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			f.Add("before", "must be a dead letter id (the next_before of the previous page)")
		}
		before = n
	}
	limit := defaultDeadLetterPage
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxDeadLetterPage {
			f.Add("limit", "must be an integer from 1 to %d", maxDeadLetterPage)
		}
		limit = n
	}
	if err := f.Err("invalid page"); err != nil {
		return err
	}
	dls, err := s.DeadLetters.DeadLetters(r.Context(), before, limit+1)
	if err != nil {
		return err
	}
	page := deadLetterPage{Items: []deadLetterView{}}
	if len(dls) > limit {
		dls = dls[:limit]
		next := dls[limit-1].ID
		page.NextBefore = &next
	}
	for i := range dls {
		page.Items = append(page.Items, viewDeadLetter(&dls[i]))
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, page)
	return nil
}

// replayDeadLetter is POST /v1/admin/dead-letters/{id}/replay (admin): the
// dead letter's payload is published again on its original subject as a
// new message (a fresh delivery count), with Nats-Msg-Id "replay-<id>",
// and the dead letter is marked replayed: 202. A dead letter replayed
// before is not published again: 200. A replayed command that was applied
// before changes nothing (the partition skips it), nor does a replayed
// checkout: its order was decided, rejected processing_failed, when the
// dead letter was recorded (postgres.DB.RecordDead). Unknown id: 404.
func (s *Server) replayDeadLetter(w http.ResponseWriter, r *http.Request) error {
	if s.DeadLetters == nil || s.Replayer == nil {
		return order.Errorf(order.EUNAVAILABLE, "dead letters are not available on this process")
	}
	raw := r.PathValue("id")
	id, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || id < 1 {
		return order.Errorf(order.ENOTFOUND, "no dead letter %q", truncate(raw, 64))
	}
	ctx := r.Context()
	d, err := s.DeadLetters.DeadLetter(ctx, id)
	if err != nil {
		return err
	}
	w.Header().Set("Cache-Control", "no-store")
	if d.ReplayedAt != nil {
		writeJSON(w, http.StatusOK, replayAnswer{DeadLetter: viewDeadLetter(d), Replayed: false})
		return nil
	}
	if err := s.Replayer.Replay(ctx, d.Subject, d.Payload, "replay-"+strconv.FormatInt(id, 10)); err != nil {
		return err
	}
	d, first, err := s.DeadLetters.MarkDeadLetterReplayed(ctx, id)
	if err != nil {
		return err
	}
	status := http.StatusAccepted
	if !first {
		status = http.StatusOK // a concurrent replay marked it: one message (same Nats-Msg-Id)
	}
	if first {
		s.metrics.replays.Inc()
	}
	writeJSON(w, status, replayAnswer{DeadLetter: viewDeadLetter(d), Replayed: first})
	return nil
}

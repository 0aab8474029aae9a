package ingress

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
)

// OpsFeed is where the operator page's deployment-wide numbers come from
// (pkg/natsbus OpsFeed): decided and rejected orders counted from the order
// events every ingress sees, accepted orders summed from every ingress
// process's accepted notes, and the partitions' queues and pins from their
// JetStream consumers.
type OpsFeed interface {
	// CountAccepted adds fn, the 202s this server answered so far, to
	// what this process reports as accepted.
	CountAccepted(fn func() int64)
	// Totals returns the counts now.
	Totals() natsbus.OpsTotals
	// Partitions returns each partition's queue and pin.
	Partitions(ctx context.Context) []natsbus.PartitionState
}

// Settings of GET /v1/admin/stream.
const (
	adminStreamDefault = time.Second
	adminStreamMin     = 250 * time.Millisecond
	adminStreamMax     = 10 * time.Second
	adminStreamSKUs    = 200 // the most SKUs a snapshot lists
	adminStreamDead    = 20  // the newest dead letters a snapshot lists
)

// adminSnapshot is one event of the operator stream: what the operator
// page shows, as of Time.
type adminSnapshot struct {
	Time time.Time `json:"time"`
	// SKUs are the first SKUs of the catalog (by id) with their stock,
	// units sold and pause switch.
	SKUs []order.SKU `json:"skus"`
	// Accepted is the checkouts answered 202 by the live ingress
	// processes (each since it started), AcceptedPerSecond their latest
	// rate, Ingresses how many report.
	Accepted          int64   `json:"accepted"`
	AcceptedPerSecond float64 `json:"accepted_per_s"`
	Ingresses         int     `json:"ingresses"`
	// Decided is the decision events (confirmed plus rejected) this
	// process has seen since it started, DecidedPerSecond their rate
	// since the previous snapshot.
	Decided          int64            `json:"decided"`
	DecidedPerSecond float64          `json:"decided_per_s"`
	Confirmed        int64            `json:"confirmed"`
	Rejected         int64            `json:"rejected"`
	RejectReasons    map[string]int64 `json:"reject_reasons"`
	// Events counts every order event seen, by type.
	Events      map[string]int64 `json:"events"`
	Partitions  []adminPartition `json:"partitions"`
	DeadLetters []deadLetterView `json:"dead_letters"`
	Errors      []string         `json:"errors"`
}

// adminPartition is a partition's queue and pin as the stream shows it.
type adminPartition struct {
	Partition  int    `json:"partition"`
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
	// PinnedClient is the pin id of the worker that holds the partition
	// (the Nats-Pin-Id on the messages it receives; each worker's
	// orderd_partition_pinned metric tells which process it is), null
	// when none does.
	PinnedClient *string    `json:"pinned_client"`
	PinnedSince  *time.Time `json:"pinned_since"`
	// Worker names the worker process holding the pin, as the worker
	// announced it (natsbus.PinsSubject), null until it has.
	Worker *string `json:"worker"`
	Error  string  `json:"error,omitempty"`
}

// adminStreamRoutes registers the operator page's live feed.
func (s *Server) adminStreamRoutes() {
	s.handle("GET /v1/admin/stream", s.admin(s.adminStream))
}

// adminStream is GET /v1/admin/stream (admin): Server-Sent Events, one
// "snapshot" event every interval (?interval=, a Go duration or seconds,
// from 250ms to 10s, default 1s) whose data is an adminSnapshot as one
// line of JSON. It runs until the client goes away, the server shuts
// down, or the caller's token expires: then a last event
//
//	event: token_expired
//
// tells the page to carry on with a fresh token (the page asks the
// operator for one before the old one runs out, and reconnects with it at
// once, so that the numbers never stop). Like every stream it takes one of
// the caller's places (streams.go) and each write must go through within
// streamWriteTimeout. The page reads it with fetch, since EventSource
// cannot send the Authorization header. A part that cannot be read (the
// database, a consumer) is named in the snapshot's errors and the rest is
// still sent.
func (s *Server) adminStream(w http.ResponseWriter, r *http.Request) error {
	every, err := streamInterval(r)
	if err != nil {
		return err
	}
	if s.Ops == nil {
		return order.Errorf(order.EUNAVAILABLE, "the operator stream is not configured on this process")
	}
	st, err := s.openStream(r)
	if err != nil {
		return err
	}
	defer st.close()
	ctx := st.ctx
	sw := newSSEWriter(w, every+adminStreamSnapshotMax)
	if sw.start() != nil {
		return nil
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var prev *adminSnapshot
	for {
		snap := s.adminSnapshot(ctx, every, prev)
		data, err := json.Marshal(snap)
		if err != nil {
			return nil // cannot happen with these types; nothing to answer once streaming
		}
		if sw.send(fmt.Appendf(nil, "event: snapshot\ndata: %s\n\n", data)) != nil {
			return nil
		}
		prev = snap
		select {
		case <-ctx.Done():
			if st.expired() {
				sw.tokenExpired()
			}
			return nil
		case <-t.C:
		}
	}
}

// streamInterval reads ?interval=.
func streamInterval(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("interval")
	if v == "" {
		return adminStreamDefault, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil || secs != secs { // NaN
			d = -1
		} else {
			d = time.Duration(secs * float64(time.Second))
		}
	}
	if d < adminStreamMin || d > adminStreamMax {
		return 0, order.Invalid("invalid stream", order.FieldError{Field: "interval",
			Detail: fmt.Sprintf("must be a duration from %s to %s (for example 1s or 0.5)", adminStreamMin, adminStreamMax)})
	}
	return d, nil
}

// adminStreamSnapshotMax bounds the reading of one snapshot (with the
// interval, when that is longer).
const adminStreamSnapshotMax = 2 * time.Second

// adminSnapshot reads what the page shows, each part within the interval.
// A snapshot cut short by the end of ctx is still whole: each part read
// too late is named in its errors.
func (s *Server) adminSnapshot(ctx context.Context, every time.Duration, prev *adminSnapshot) *adminSnapshot {
	ctx, cancel := context.WithTimeout(ctx, max(every, adminStreamSnapshotMax))
	defer cancel()
	snap := &adminSnapshot{
		Time: time.Now().UTC(), SKUs: []order.SKU{}, Partitions: []adminPartition{},
		DeadLetters: []deadLetterView{}, Errors: []string{},
	}
	tot := s.Ops.Totals()
	snap.Accepted, snap.AcceptedPerSecond, snap.Ingresses = tot.Accepted, round2(tot.AcceptedPerSecond), tot.Ingresses
	snap.Confirmed, snap.Rejected = tot.Events[string(order.EventConfirmed)], tot.Events[string(order.EventRejected)]
	snap.Decided = snap.Confirmed + snap.Rejected
	snap.RejectReasons, snap.Events = tot.Rejected, tot.Events
	if prev != nil {
		if dt := snap.Time.Sub(prev.Time).Seconds(); dt > 0 && snap.Decided >= prev.Decided {
			snap.DecidedPerSecond = round2(float64(snap.Decided-prev.Decided) / dt)
		}
	}

	if skus, err := s.SKUs.ListSKUs(ctx, uuid.Nil, adminStreamSKUs); err != nil {
		snap.Errors = append(snap.Errors, "skus: "+order.ErrorMessage(err))
	} else if skus != nil {
		snap.SKUs = skus
	}
	for _, p := range s.Ops.Partitions(ctx) {
		v := adminPartition{Partition: p.Partition, Pending: p.Pending, AckPending: p.AckPending}
		if p.Err != nil {
			v.Error = "not readable"
			snap.Errors = append(snap.Errors, fmt.Sprintf("partition %d: %v", p.Partition, p.Err))
		}
		if p.PinnedClient != "" {
			id, since := p.PinnedClient, p.PinnedSince.UTC()
			v.PinnedClient = &id
			if !since.IsZero() {
				v.PinnedSince = &since
			}
		}
		if p.Worker != "" {
			name := p.Worker
			v.Worker = &name
		}
		snap.Partitions = append(snap.Partitions, v)
	}
	if s.DeadLetters != nil {
		dls, err := s.DeadLetters.DeadLetters(ctx, 0, adminStreamDead)
		if err != nil {
			snap.Errors = append(snap.Errors, "dead letters: "+order.ErrorMessage(err))
		}
		for i := range dls {
			snap.DeadLetters = append(snap.DeadLetters, viewDeadLetter(&dls[i]))
		}
	}
	return snap
}

// round2 rounds a rate to two decimals.
func round2(v float64) float64 { return float64(int64(v*100+0.5)) / 100 }

// acceptedTotal returns the 202s this server answered to POST /v1/orders
// (orderd_orders_accepted_total), for the accepted notes.
func (s *Server) acceptedTotal() int64 {
	var m dto.Metric
	if err := s.metrics.accepted.Write(&m); err != nil {
		return 0
	}
	return int64(m.GetCounter().GetValue())
}

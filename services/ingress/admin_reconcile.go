package ingress

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// reconcileReport is the answer of GET /v1/admin/reconcile.
type reconcileReport struct {
	At     time.Time              `json:"at"`
	OK     bool                   `json:"ok"`
	Drifts int                    `json:"drifts"` // SKUs that are not ok
	SKUs   []order.Reconciliation `json:"skus"`
}

// reconcile is GET /v1/admin/reconcile (admin): per SKU, what the stock
// counter says was taken against what orders (and undecided reservations)
// hold and what the order events count. Drift is counted in
// orderd_reconcile_drift{sku} and orderd_reconcile_runs_with_drift_total.
func (s *Server) reconcile(w http.ResponseWriter, r *http.Request) error {
	if s.Reconciler == nil {
		return order.Errorf(order.EUNAVAILABLE, "reconciliation is not available on this process")
	}
	rows, err := s.Reconciler.Reconcile(r.Context())
	if err != nil {
		return err
	}
	rep := reconcileReport{At: time.Now().UTC(), OK: true, SKUs: rows}
	if rep.SKUs == nil {
		rep.SKUs = []order.Reconciliation{}
	}
	s.metrics.drift.Reset()
	for _, row := range rows {
		d := row.Drift
		if d == 0 && row.EventsDrift != nil {
			d = *row.EventsDrift
		}
		s.metrics.drift.WithLabelValues(row.SKUID.String()).Set(float64(d))
		if !row.OK {
			rep.OK = false
			rep.Drifts++
		}
	}
	s.metrics.reconcileRuns.Inc()
	if !rep.OK {
		s.metrics.driftRuns.Inc()
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// StockReconciler is a Reconciler made of its two sources: Counts reads
// the stock counters and what orders hold (pkg/postgres DB.StockCounts),
// Events, if not nil, counts what the order events hold
// (natsbus.EventHoldings).
type StockReconciler struct {
	Counts func(ctx context.Context) ([]order.StockCount, error)
	Events func(ctx context.Context) (map[uuid.UUID]int64, error)
}

// Reconcile implements Reconciler. The events are read first: an order
// decided in between shows in the database and not in the events, never
// the other way round.
func (r StockReconciler) Reconcile(ctx context.Context) ([]order.Reconciliation, error) {
	var events map[uuid.UUID]int64
	if r.Events != nil {
		var err error
		if events, err = r.Events(ctx); err != nil {
			return nil, fmt.Errorf("%w: %w", order.Errorf(order.EUNAVAILABLE, "the order events could not be counted"), err)
		}
	}
	counts, err := r.Counts(ctx)
	if err != nil {
		return nil, err
	}
	return order.Reconcile(counts, events), nil
}

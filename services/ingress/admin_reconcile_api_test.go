package ingress

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// playPartitions applies every command on ORDER_CMDS not applied yet, as
// the partitions would, and relays the outbox to JetStream.
func (e *orderEnv) playPartitions(t *testing.T, cmds []order.Command) {
	t.Helper()
	ctx := context.Background()
	byPart := map[int][]order.Command{}
	for _, c := range cmds {
		byPart[c.Partition] = append(byPart[c.Partition], c)
	}
	for p, cs := range byPart {
		if _, err := e.DB.ApplyBatch(ctx, p, cs, postgres.PartitionConfig{Partitions: e.Server.cfg.Partitions}); err != nil {
			t.Fatalf("apply: %v", err)
		}
	}
	lock, err := e.DB.TryRelayLock(ctx)
	if err != nil || lock == nil {
		t.Fatalf("relay lock: %v", err)
	}
	defer lock.Release()
	rows, err := lock.Pending(ctx, 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rows {
		if _, err := e.JS.Publish(ctx, r.Subject, r.Payload, jetstream.WithMsgID(r.MsgID)); err != nil {
			t.Fatal(err)
		}
	}
	if err := lock.Delete(ctx, rows); err != nil {
		t.Fatal(err)
	}
}

func (e *orderEnv) reconcile(t *testing.T) reconcileReport {
	t.Helper()
	var rep reconcileReport
	e.mustDo(t, "GET", "/v1/admin/reconcile", e.adminToken(t), nil, http.StatusOK, &rep)
	return rep
}

func TestAdminReconcile(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	sku := e.createSKU(t, newSKU("Phone", 1000, 10))
	other := e.createSKU(t, newSKU("Case", 100, 5))
	var accepted []accepted
	for range 3 {
		b := e.newBuyer(t)
		accepted = append(accepted, e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 2}), ""))
	}
	var cmds []order.Command
	for _, c := range e.commands(t) {
		cmds = append(cmds, c.Command)
	}
	e.playPartitions(t, cmds)
	// One buyer cancels: the events count it out, the stock comes back.
	o, err := e.DB.Order(context.Background(), accepted[0].OrderID)
	if err != nil || o.Status != order.StatusConfirmed {
		t.Fatalf("order %+v, %v", o, err)
	}
	e.playPartitions(t, []order.Command{{ID: uuid.New(), Kind: order.KindCancel, Partition: order.Partition(sku.ID, e.Server.cfg.Partitions), At: time.Now(),
		Cancel: &order.Cancel{OrderID: o.ID, UserID: o.UserID}}})

	rep := e.reconcile(t)
	if !rep.OK || rep.Drifts != 0 || len(rep.SKUs) != 2 {
		t.Fatalf("a clean sale: %+v", rep)
	}
	for _, r := range rep.SKUs {
		want := int64(0)
		if r.SKUID == sku.ID {
			want = 4
		}
		if r.TakenByCounter != want || r.HeldByOrders != want || r.HeldByEvents == nil || *r.HeldByEvents != want || r.Drift != 0 || !r.OK {
			t.Errorf("SKU %s: %+v (held by events %v), want %d held everywhere", r.Name, r, r.HeldByEvents, want)
		}
	}
	reg := e.Server.Registry
	if got := testutil.ToFloat64(e.Server.metrics.driftRuns); got != 0 {
		t.Errorf("runs with drift %v, want 0", got)
	}

	// Stock taken behind the service's back.
	if _, err := e.DB.Exec(`UPDATE skus SET stock = stock - 1 WHERE id = $1`, sku.ID); err != nil {
		t.Fatal(err)
	}
	rep = e.reconcile(t)
	if rep.OK || rep.Drifts != 1 {
		t.Fatalf("after the stock moved: %+v", rep)
	}
	for _, r := range rep.SKUs {
		if r.SKUID == sku.ID && (r.Drift != 1 || r.OK || r.TakenByCounter != 5 || r.HeldByOrders != 4) {
			t.Errorf("drifted SKU %+v", r)
		}
		if r.SKUID == other.ID && !r.OK {
			t.Errorf("the other SKU drifts: %+v", r)
		}
	}
	if got := testutil.ToFloat64(e.Server.metrics.drift.WithLabelValues(sku.ID.String())); got != 1 {
		t.Errorf("orderd_reconcile_drift{sku} %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.Server.metrics.driftRuns); got != 1 {
		t.Errorf("runs with drift %v, want 1", got)
	}
	if n, err := testutil.GatherAndCount(reg, "orderd_reconcile_drift"); err != nil || n != 2 {
		t.Errorf("orderd_reconcile_drift series %d, %v; want 2", n, err)
	}

	resp, body := e.do(t, "GET", "/v1/admin/reconcile", e.token(t, "alice"), nil)
	wantProblem(t, resp, body, http.StatusForbidden)
}

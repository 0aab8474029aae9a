package ingress

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// withAdminOps wires the dead letter and reconciliation routes to the
// env's database and NATS server.
func withAdminOps(e *orderEnv, _ *Config, d *Deps) {
	d.Replayer = natsbus.NewPublisher(e.JS)
	db := d.Orders.(*postgres.DB)
	d.Reconciler = StockReconciler{Counts: db.StockCounts, Events: db.EventHoldings}
}

func newAdminEnv(t *testing.T) *orderEnv {
	t.Helper()
	return newOrderEnv(t, withAdminOps, func(_ *orderEnv, _ *Config, d *Deps) { d.DeadLetters = d.Orders.(*postgres.DB) })
}

// deadCheckout records a dead letter holding one checkout command of
// partition p, as a worker would.
func (e *orderEnv) deadCheckout(t *testing.T, key string, p int) (int64, order.Command) {
	t.Helper()
	sku := uuid.New()
	for order.Partition(sku, e.Server.cfg.Partitions) != p {
		sku = uuid.New()
	}
	cmd := order.Command{ID: uuid.New(), Kind: order.KindCheckout, Partition: p,
		Checkout: &order.Checkout{OrderID: uuid.New(), OrderNumber: "FS-1", UserID: "u1", AddressID: uuid.New(), PaymentMethod: order.PayCard,
			Lines: []order.LineRequest{{SKUID: sku, Quantity: 2}}}}
	data, err := order.EncodeEnvelope(cmd)
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := e.DB.RecordDeadLetter(context.Background(), &postgres.DeadLetter{SourceKey: key, Partition: p, Subject: order.Subject(p),
		StreamSeq: 42, Reason: postgres.DeadMaxDeliveries, LastError: "boom", Deliveries: 10, Payload: data})
	if err != nil {
		t.Fatal(err)
	}
	return id, cmd
}

func TestAdminDeadLetters(t *testing.T) {
	t.Parallel()
	e := newAdminEnv(t)
	admin, user := e.adminToken(t), e.token(t, "alice")
	ctx := context.Background()
	first, cmd := e.deadCheckout(t, "seq-42", 1)
	poison, _, err := e.DB.RecordDeadLetter(ctx, &postgres.DeadLetter{SourceKey: "seq-43", Partition: 2, Subject: order.Subject(2),
		StreamSeq: 43, Reason: postgres.DeadPoisonMessage, LastError: "decode command envelope: bad", Deliveries: 1, Payload: []byte("not json")})
	if err != nil {
		t.Fatal(err)
	}

	var page deadLetterPage
	e.mustDo(t, "GET", "/v1/admin/dead-letters?limit=1", admin, nil, http.StatusOK, &page)
	if len(page.Items) != 1 || page.Items[0].ID != poison || page.NextBefore == nil {
		t.Fatalf("first page %+v", page)
	}
	if p := page.Items[0]; p.Payload == nil || *p.Payload != "not json" || len(p.Commands) != 0 || p.Reason != "poison_message" || p.LastError == "" {
		t.Errorf("poison dead letter %+v", p)
	}
	e.mustDo(t, "GET", fmt.Sprintf("/v1/admin/dead-letters?limit=1&before=%d", *page.NextBefore), admin, nil, http.StatusOK, &page)
	if len(page.Items) != 1 || page.NextBefore != nil {
		t.Fatalf("second page %+v", page)
	}
	d := page.Items[0]
	if d.ID != first || d.Subject != "orders.cmd.1" || d.Partition != 1 || d.Deliveries != 10 || d.LastError != "boom" || d.StreamSeq != 42 ||
		len(d.Commands) != 1 || d.Commands[0].ID != cmd.ID || d.Commands[0].Kind != order.KindCheckout || *d.Commands[0].OrderID != cmd.Checkout.OrderID ||
		d.ReplayedAt != nil {
		t.Errorf("dead letter %+v", d)
	}

	// Replay: one new message on the original subject, however often.
	before := e.commandCount(t)
	path := fmt.Sprintf("/v1/admin/dead-letters/%d/replay", first)
	var ans replayAnswer
	e.mustDo(t, "POST", path, admin, nil, http.StatusAccepted, &ans)
	if !ans.Replayed || ans.DeadLetter.ReplayedAt == nil {
		t.Errorf("first replay %+v", ans)
	}
	e.mustDo(t, "POST", path, admin, nil, http.StatusOK, &ans)
	if ans.Replayed {
		t.Errorf("second replay says it published: %+v", ans)
	}
	if got := e.commandCount(t); got != before+1 {
		t.Fatalf("%d messages on ORDER_CMDS after two replays, want %d", got, before+1)
	}
	cmds := e.commands(t)
	if last := cmds[len(cmds)-1]; last.ID != cmd.ID || last.MsgID != fmt.Sprintf("replay-%d", first) {
		t.Errorf("replayed message %+v", last)
	}
	// Even a replay that slips past the mark (the same Nats-Msg-Id) is stored once.
	if err := natsbus.NewPublisher(e.JS).Replay(ctx, order.Subject(1), []byte(`{}`), fmt.Sprintf("replay-%d", first)); err != nil {
		t.Fatal(err)
	}
	if got := e.commandCount(t); got != before+1 {
		t.Errorf("%d messages on ORDER_CMDS after a third publish, want %d", got, before+1)
	}

	e.mustDo(t, "GET", "/v1/admin/dead-letters", admin, nil, http.StatusOK, &page)
	if len(page.Items) != 2 || page.Items[1].ReplayedAt == nil || page.Items[0].ReplayedAt != nil {
		t.Errorf("after replay %+v", page.Items)
	}

	cases := []struct {
		method, path, token string
		want                int
	}{
		{"GET", "/v1/admin/dead-letters", user, http.StatusForbidden},
		{"POST", path, user, http.StatusForbidden},
		{"GET", "/v1/admin/dead-letters", "", http.StatusUnauthorized},
		{"POST", "/v1/admin/dead-letters/999999/replay", admin, http.StatusNotFound},
		{"POST", "/v1/admin/dead-letters/abc/replay", admin, http.StatusNotFound},
		{"POST", "/v1/admin/dead-letters/-1/replay", admin, http.StatusNotFound},
		{"POST", "/v1/admin/dead-letters/" + strings.Repeat("9", 30) + "/replay", admin, http.StatusNotFound},
		{"GET", "/v1/admin/dead-letters?limit=0", admin, http.StatusUnprocessableEntity},
		{"GET", "/v1/admin/dead-letters?before=x", admin, http.StatusUnprocessableEntity},
	}
	for _, c := range cases {
		resp, body := e.do(t, c.method, c.path, c.token, nil)
		wantProblem(t, resp, body, c.want)
	}
	if got := e.commandCount(t); got != before+1 {
		t.Errorf("refused requests published: %d messages, want %d", got, before+1)
	}
}

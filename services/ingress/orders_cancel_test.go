package ingress

import (
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

func TestCancelOrder(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	place := func() uuid.UUID {
		return e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID
	}
	pending, confirmed := place(), place()
	e.decide(t, confirmed, order.StatusConfirmed)
	fromDB := e.insertOrder(t, b, sku, order.StatusConfirmed, time.Now(), "", "")
	home := order.Partition(sku.ID, 4)

	for _, id := range []uuid.UUID{pending, confirmed, fromDB.ID} {
		var o order.Order
		e.mustDo(t, "POST", "/v1/orders/"+id.String()+"/cancel", b.Token, nil, http.StatusAccepted, &o)
		if o.ID != id {
			t.Errorf("answered order %s, want %s", o.ID, id)
		}
		// Twice is one cancellation: the same command id, dropped by
		// JetStream.
		e.mustDo(t, "POST", "/v1/orders/"+id.String()+"/cancel", b.Token, nil, http.StatusAccepted, nil)
	}
	var cancels []order.Command
	for _, c := range e.commands(t) {
		if c.Kind == order.KindCancel {
			cancels = append(cancels, c.Command)
		}
	}
	if len(cancels) != 3 {
		t.Fatalf("%d cancel commands, want 3", len(cancels))
	}
	for i, id := range []uuid.UUID{pending, confirmed, fromDB.ID} {
		c := cancels[i]
		if c.ID != uuid.NewSHA1(id, []byte("cancel")) || c.Partition != home || c.Cancel.OrderID != id || c.Cancel.UserID != b.ID {
			t.Errorf("cancel command %+v (%+v) for order %s", c, c.Cancel, id)
		}
	}

	for _, st := range []order.Status{order.StatusRejected, order.StatusPaid, order.StatusCancelled, order.StatusExpired} {
		id := place()
		e.decide(t, id, st)
		before := e.commandCount(t)
		resp, data := e.do(t, "POST", "/v1/orders/"+id.String()+"/cancel", b.Token, nil)
		wantProblem(t, resp, data, http.StatusConflict)
		if n := e.commandCount(t); n != before {
			t.Errorf("%s order: a cancel was published", st)
		}
	}
	resp, data := e.do(t, "POST", "/v1/orders/"+uuid.NewString()+"/cancel", b.Token, nil)
	wantProblem(t, resp, data, http.StatusNotFound)
}

func TestRestock(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	admin := e.adminToken(t)
	path := "/v1/skus/" + sku.ID.String() + "/restock"

	var got restockAccepted
	e.mustDo(t, "POST", path, admin, map[string]int64{"quantity": 25}, http.StatusAccepted, &got)
	cmds := e.commands(t)
	if len(cmds) != 1 {
		t.Fatalf("%d commands, want 1", len(cmds))
	}
	c := cmds[0]
	if c.Kind != order.KindRestock || c.Partition != order.Partition(sku.ID, 4) || c.Restock.SKUID != sku.ID || c.Restock.Quantity != 25 || c.ID != got.CommandID {
		t.Errorf("command %+v %+v, answer %+v", c.Command, c.Restock, got)
	}
	// With an Idempotency-Key a retry is one restock.
	h := http.Header{"Idempotency-Key": {"restock-1"}}
	for range 2 {
		resp, data := e.doHeaders(t, "POST", path, admin, map[string]int64{"quantity": 5}, h)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("status %d: %s", resp.StatusCode, data)
		}
	}
	if n := e.commandCount(t); n != 2 {
		t.Errorf("%d commands, want 2", n)
	}

	before := e.commandCount(t)
	for _, c := range []struct {
		name, token, path string
		body              any
		want              int
	}{
		{"a user", b.Token, path, map[string]int64{"quantity": 1}, http.StatusForbidden},
		{"nobody", "", path, map[string]int64{"quantity": 1}, http.StatusUnauthorized},
		{"unknown SKU", admin, "/v1/skus/" + uuid.NewString() + "/restock", map[string]int64{"quantity": 1}, http.StatusNotFound},
		{"bad SKU id", admin, "/v1/skus/nope/restock", map[string]int64{"quantity": 1}, http.StatusNotFound},
		{"zero", admin, path, map[string]int64{"quantity": 0}, http.StatusUnprocessableEntity},
		{"negative", admin, path, map[string]int64{"quantity": -3}, http.StatusUnprocessableEntity},
		{"too many", admin, path, map[string]int64{"quantity": order.MaxStock + 1}, http.StatusUnprocessableEntity},
		{"missing", admin, path, map[string]int64{}, http.StatusUnprocessableEntity},
		{"a string", admin, path, map[string]string{"quantity": "5"}, http.StatusUnprocessableEntity},
		{"unknown field", admin, path, map[string]int64{"quantity": 1, "stock": 5}, http.StatusBadRequest},
	} {
		resp, data := e.do(t, "POST", c.path, c.token, c.body)
		wantProblem(t, resp, data, c.want)
	}
	if n := e.commandCount(t); n != before {
		t.Errorf("refused restocks published %d commands", n-before)
	}
}

package ingress

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

func TestGetOrderOwnerOnly(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b, mallory := e.newBuyer(t), e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	a := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	decided := e.insertOrder(t, b, sku, order.StatusConfirmed, time.Now(), "", "")
	before := e.commandCount(t)

	for _, id := range []uuid.UUID{a.OrderID, decided.ID} {
		for _, path := range []string{"/v1/orders/" + id.String(), "/v1/orders/" + id.String() + "?wait=1s"} {
			resp, data := e.do(t, "GET", path, mallory.Token, nil)
			p := wantProblem(t, resp, data, http.StatusNotFound)
			// Indistinguishable from an order that does not exist.
			resp2, data2 := e.do(t, "GET", "/v1/orders/"+uuid.NewString(), mallory.Token, nil)
			p2 := wantProblem(t, resp2, data2, http.StatusNotFound)
			if p.Title != p2.Title || p.Type != p2.Type {
				t.Errorf("another user's order %+v and a missing one %+v answer differently", p, p2)
			}
		}
		resp, data := e.do(t, "POST", "/v1/orders/"+id.String()+"/cancel", mallory.Token, nil)
		wantProblem(t, resp, data, http.StatusNotFound)
		resp, err := e.rawEvents(t, mallory, id, "")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("another user's event stream: %d, want 404", resp.StatusCode)
		}
	}
	if n := e.commandCount(t); n != before {
		t.Errorf("another user's cancel published a command")
	}
	for _, bad := range []string{"nope", "123", uuid.NewString() + "x"} {
		resp, data := e.do(t, "GET", "/v1/orders/"+bad, b.Token, nil)
		wantProblem(t, resp, data, http.StatusNotFound)
	}
	resp, data := e.do(t, "GET", "/v1/orders/"+a.OrderID.String(), "", nil)
	wantProblem(t, resp, data, http.StatusUnauthorized)
}

func TestGetOrderFallsBackToPostgres(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 1500, 10))
	want := e.insertOrder(t, b, sku, order.StatusRejected, time.Now(), "", "")
	ctx := context.Background()
	if _, err := e.Redis.OrderStatus(ctx, want.ID); order.ErrorCode(err) != order.ENOTFOUND {
		t.Fatalf("the order is cached before anyone read it: %v", err)
	}
	got := e.getOrder(t, b, want.ID, http.StatusOK)
	if got.Status != order.StatusRejected || got.RejectReason != order.RejectOutOfStock || got.GrandTotal != want.GrandTotal ||
		len(got.Lines) != 1 || got.Lines[0].Name != "Sneaker" {
		t.Errorf("got %+v, want %+v", got, want)
	}
	// Read through: the next poll is served by Redis.
	cached, err := e.Redis.OrderStatus(ctx, want.ID)
	if err != nil || cached.Status != order.StatusRejected {
		t.Errorf("cached %+v, %v: want the order", cached, err)
	}
	if _, err := e.DB.Exec(`DELETE FROM orders WHERE id = $1`, want.ID); err != nil {
		t.Fatal(err)
	}
	if got := e.getOrder(t, b, want.ID, http.StatusOK); got.Status != order.StatusRejected {
		t.Errorf("from the cache: %s", got.Status)
	}
}

func TestLongPoll(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	place := func(t *testing.T) uuid.UUID {
		return e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID
	}

	t.Run("wakes on the decision", func(t *testing.T) {
		id := place(t)
		done := make(chan *order.Order, 1)
		start := time.Now()
		go func() {
			var o order.Order
			resp, data := e.do(t, "GET", "/v1/orders/"+id.String()+"?wait=10s", b.Token, nil)
			if resp.StatusCode == http.StatusOK {
				json.Unmarshal(data, &o)
			}
			done <- &o
		}()
		// Let the poll start waiting, then decide.
		waitFor(t, func() bool { return e.Hub.Waiting() > 0 })
		e.decide(t, id, order.StatusConfirmed)
		o := <-done
		wantStatus(t, o, order.StatusConfirmed)
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("answered after %s: it did not wake", d)
		}
		if o.GrandTotal != 1500+testShippingFee {
			t.Errorf("grand total %d: want the decided order's", o.GrandTotal)
		}
	})
	t.Run("answers the current status when the time is up", func(t *testing.T) {
		id := place(t)
		start := time.Now()
		o := e.getOrder(t, b, id, http.StatusOK)
		wantStatus(t, o, order.StatusPending)
		var got order.Order
		e.mustDo(t, "GET", "/v1/orders/"+id.String()+"?wait=0.8", b.Token, nil, http.StatusOK, &got)
		wantStatus(t, &got, order.StatusPending)
		if d := time.Since(start); d < 700*time.Millisecond || d > 5*time.Second {
			t.Errorf("answered after %s, want about 0.8s", d)
		}
	})
	t.Run("answers at once when final", func(t *testing.T) {
		id := place(t)
		e.decide(t, id, order.StatusRejected)
		start := time.Now()
		var got order.Order
		e.mustDo(t, "GET", "/v1/orders/"+id.String()+"?wait=30s", b.Token, nil, http.StatusOK, &got)
		wantStatus(t, &got, order.StatusRejected)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("answered after %s", d)
		}
	})
	t.Run("a missed event is caught by the re-read", func(t *testing.T) {
		id := place(t)
		done := make(chan order.Order, 1)
		go func() {
			var o order.Order
			_, data := e.do(t, "GET", "/v1/orders/"+id.String()+"?wait=10s", b.Token, nil)
			json.Unmarshal(data, &o)
			done <- o
		}()
		waitFor(t, func() bool { return e.Hub.Waiting() > 0 })
		// The worker updated Redis but the event never reached this
		// process.
		o, err := e.Redis.OrderStatus(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		o.Status = order.StatusConfirmed
		if err := e.Redis.PutOrders(context.Background(), o); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-done:
			wantStatus(t, &got, order.StatusConfirmed)
		case <-time.After(5 * time.Second):
			t.Fatal("the long-poll did not notice the change")
		}
	})
	t.Run("bad wait", func(t *testing.T) {
		id := place(t)
		for _, w := range []string{"soon", "-1s", "31s", "40", "1h", "NaN", "Inf", "1e400"} {
			resp, data := e.do(t, "GET", "/v1/orders/"+id.String()+"?wait="+w, b.Token, nil)
			if p := wantProblem(t, resp, data, http.StatusUnprocessableEntity); !p.hasField("wait") {
				t.Errorf("wait=%s: problem %s does not name wait", w, data)
			}
		}
		for _, w := range []string{"0", "0s", "", "250ms"} {
			e.mustDo(t, "GET", "/v1/orders/"+id.String()+"?wait="+w, b.Token, nil, http.StatusOK, nil)
		}
	})
}

// waitFor polls cond for up to 5 seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseWait(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, true}, {"10s", 10 * time.Second, true}, {"10", 10 * time.Second, true}, {"2.5", 2500 * time.Millisecond, true},
		{"30s", 30 * time.Second, true}, {"30", 30 * time.Second, true}, {"500ms", 500 * time.Millisecond, true},
		{"30.001", 0, false}, {"30s1ns", 0, false}, {"-0.5", 0, false}, {"x", 0, false}, {"+Inf", 0, false}, {"1e9", 0, false},
	} {
		r, _ := http.NewRequest("GET", "/v1/orders/x?wait="+c.in, nil)
		got, err := parseWait(r)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("parseWait(%q) = %s, %v; want %s, ok %v", c.in, got, err, c.want, c.ok)
		}
		if err != nil && order.ErrorCode(err) != order.EINVALID {
			t.Errorf("parseWait(%q): %v, want EINVALID", c.in, err)
		}
	}
}

// A long-poll of an order decided before the poll arrived answers at once;
// ?since=confirmed waits for what follows the decision.
func TestLongPollSince(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	id := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID
	e.decide(t, id, order.StatusConfirmed)

	start := time.Now()
	var got order.Order
	e.mustDo(t, "GET", "/v1/orders/"+id.String()+"?wait=5s", b.Token, nil, http.StatusOK, &got)
	wantStatus(t, &got, order.StatusConfirmed)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("a decided order's long-poll answered after %s, want at once", d)
	}
	start = time.Now()
	e.mustDo(t, "GET", "/v1/orders/"+id.String()+"?wait=0.8&since=confirmed", b.Token, nil, http.StatusOK, &got)
	if d := time.Since(start); d < 700*time.Millisecond {
		t.Errorf("since=confirmed answered after %s, want it to wait for a later status", d)
	}
	e.mustDo(t, "GET", "/v1/orders/"+id.String()+"?wait=1s&since=shipped", b.Token, nil, http.StatusUnprocessableEntity, nil)
}

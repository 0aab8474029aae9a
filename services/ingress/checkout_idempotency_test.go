package ingress

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

func TestCheckoutIdempotency(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	body := directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1})
	ctx := context.Background()

	first := e.mustCheckout(t, b, body, "key-1")
	if want := order.IdempotentID(b.ID, "key-1"); first.OrderID != want {
		t.Errorf("order id %s, want the one derived from the user and key, %s", first.OrderID, want)
	}
	cmds := e.commands(t)
	if len(cmds) != 1 || cmds[0].Checkout.IdempotencyKey != "key-1" {
		t.Fatalf("commands %+v: want one carrying the key", cmds)
	}

	same := func(t *testing.T, what string, got accepted) {
		t.Helper()
		if got.OrderID != first.OrderID || got.OrderNumber != first.OrderNumber {
			t.Errorf("%s: answer %+v, want the first %+v", what, got, first)
		}
		if n := e.commandCount(t); n != 1 {
			t.Errorf("%s: %d commands on the stream, want 1", what, n)
		}
	}

	t.Run("same key and body", func(t *testing.T) {
		resp, data := e.checkout(t, b, body, "key-1")
		if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("status %d replayed %q: %s", resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), data)
		}
		var a accepted
		json.Unmarshal(data, &a)
		same(t, "retry", a)
	})
	t.Run("same body spelled differently", func(t *testing.T) {
		raw := `{ "items": [ {"quantity": 1, "sku_id": "` + sku.ID.String() + `"} ],
			"payment_method": "card", "address_id": "` + b.Address.String() + `" }`
		same(t, "respelled", e.mustCheckout(t, b, raw, "key-1"))
	})
	t.Run("same key, another body", func(t *testing.T) {
		for _, other := range []map[string]any{
			directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 2}),
			{"address_id": b.Address, "payment_method": "wallet", "items": []order.LineRequest{{SKUID: sku.ID, Quantity: 1}}},
		} {
			before := e.snapshot(t)
			resp, data := e.checkout(t, b, other, "key-1")
			if p := wantProblem(t, resp, data, http.StatusUnprocessableEntity); !p.hasField("Idempotency-Key") {
				t.Errorf("problem %s does not name the Idempotency-Key", data)
			}
			e.assertUnchanged(t, before)
		}
		same(t, "after the refusals", e.mustCheckout(t, b, body, "key-1"))
	})
	t.Run("another user, same key", func(t *testing.T) {
		c := e.newBuyer(t)
		a := e.mustCheckout(t, c, directBody(c, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "key-1")
		if a.OrderID == first.OrderID {
			t.Error("two users' keys name the same order")
		}
	})
	// From here on the other user's command is on the stream too.
	base := e.commandCount(t)
	sameAgain := func(t *testing.T, what string, got accepted) {
		t.Helper()
		if got.OrderID != first.OrderID {
			t.Errorf("%s: order %s, want %s", what, got.OrderID, first.OrderID)
		}
		if n := e.commandCount(t); n != base {
			t.Errorf("%s: %d commands on the stream, want %d", what, n, base)
		}
	}
	t.Run("retry after the pending cache entry is gone", func(t *testing.T) {
		if err := e.Redis.DeleteOrder(ctx, first.OrderID); err != nil {
			t.Fatal(err)
		}
		a := e.mustCheckout(t, b, body, "key-1")
		sameAgain(t, "status lost", a)
		if a.OrderNumber != first.OrderNumber {
			t.Errorf("number %s, want %s", a.OrderNumber, first.OrderNumber)
		}
	})
	t.Run("retry after a crash between publish and answer", func(t *testing.T) {
		// The process died after the PubAck and before it marked the
		// record: the retry republishes the same command, and JetStream
		// drops it as a duplicate.
		rec, err := e.Redis.Idempotency(ctx, first.OrderID)
		if err != nil {
			t.Fatal(err)
		}
		rec.Published = false
		if err := e.Redis.PutIdempotency(ctx, first.OrderID, rec); err != nil {
			t.Fatal(err)
		}
		a := e.mustCheckout(t, b, body, "key-1")
		sameAgain(t, "republished", a)
		if a.OrderNumber != first.OrderNumber {
			t.Errorf("number %s, want %s", a.OrderNumber, first.OrderNumber)
		}
		if rec, err := e.Redis.Idempotency(ctx, first.OrderID); err != nil || !rec.Published {
			t.Errorf("record %+v, %v: want it published again", rec, err)
		}
	})
	t.Run("retry after Redis lost everything", func(t *testing.T) {
		// The order's status and the record are gone, and no partition has
		// written the order yet: the key's claim in PostgreSQL still tells
		// another body from a retry, and the retry gets the first answer.
		for _, k := range []string{"order:", "idem:"} {
			e.Redis.Client().Del(ctx, e.redisKey(k+first.OrderID.String()))
		}
		resp, data := e.checkout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 3}), "key-1")
		wantProblem(t, resp, data, http.StatusUnprocessableEntity)
		if n := e.commandCount(t); n != base {
			t.Errorf("another body published a command: %d on the stream, want %d", n, base)
		}
		resp, data = e.checkout(t, b, body, "key-1")
		var a accepted
		if resp.StatusCode != http.StatusAccepted || json.Unmarshal(data, &a) != nil || resp.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("retry: %d (replayed %q) %s, want a replayed 202", resp.StatusCode, resp.Header.Get("Idempotent-Replayed"), data)
		}
		if a.OrderID != first.OrderID || a.OrderNumber != first.OrderNumber {
			t.Errorf("retry answered %s %s, want the first answer %s %s", a.OrderID, a.OrderNumber, first.OrderID, first.OrderNumber)
		}
		// The retry cannot know whether the first command was stored: it
		// publishes the same order again, under a new command id, and the
		// partition skips whichever comes second.
		cmds := e.commands(t)
		last := cmds[len(cmds)-1]
		if len(cmds) != int(base)+1 || last.Checkout.OrderID != first.OrderID || last.Checkout.OrderNumber != first.OrderNumber || last.ID == first.OrderID {
			t.Errorf("commands %+v: want one more, for the same order and number under a new command id", cmds[base:])
		}
		o := e.getOrder(t, b, first.OrderID, http.StatusOK)
		wantStatus(t, o, order.StatusPending)
	})
}

func TestCheckoutIdempotencyFromPostgres(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	body := directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1})
	req := checkoutRequest{AddressID: b.Address, PaymentMethod: order.PayCard, Items: []order.LineRequest{{SKUID: sku.ID, Quantity: 1}}}
	// An order a partition wrote long ago: Redis forgot it, JetStream's
	// dedupe window is over.
	old := e.insertOrder(t, b, sku, order.StatusConfirmed, time.Now().Add(-48*time.Hour), "old-key", req.hash())

	before := e.commandCount(t)
	a := e.mustCheckout(t, b, body, "old-key")
	if a.OrderID != old.ID || a.OrderNumber != old.Number {
		t.Errorf("answer %+v, want the stored order %s %s", a, old.ID, old.Number)
	}
	if n := e.commandCount(t); n != before {
		t.Errorf("a replay published a command")
	}
	resp, data := e.checkout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 5}), "old-key")
	wantProblem(t, resp, data, http.StatusUnprocessableEntity)
	// The retry works even though the cart or address could have changed
	// since: the stored order answers before any check.
	e.mustDo(t, "DELETE", "/v1/addresses/"+b.Address.String(), b.Token, nil, http.StatusNoContent, nil)
	if a := e.mustCheckout(t, b, body, "old-key"); a.OrderID != old.ID {
		t.Errorf("after the address was deleted: %s, want %s", a.OrderID, old.ID)
	}
}

func TestCheckoutIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	body := directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1})
	const n = 12
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ids     = map[uuid.UUID]int{}
		numbers = map[string]int{}
		codes   = map[int]int{}
	)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, data := e.checkout(t, b, body, "race-key")
			mu.Lock()
			defer mu.Unlock()
			codes[resp.StatusCode]++
			if resp.StatusCode == http.StatusAccepted {
				var a accepted
				json.Unmarshal(data, &a)
				ids[a.OrderID]++
				numbers[a.OrderNumber]++
			}
		}()
	}
	wg.Wait()
	if codes[http.StatusAccepted]+codes[http.StatusConflict] != n || codes[http.StatusAccepted] == 0 {
		t.Errorf("status codes %v: want 202s (and possibly 409s) only", codes)
	}
	if len(ids) != 1 || len(numbers) != 1 {
		t.Errorf("ids %v numbers %v: want one order", ids, numbers)
	}
	if c := e.commandCount(t); c != 1 {
		t.Errorf("%d commands, want 1", c)
	}
}

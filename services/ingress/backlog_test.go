package ingress

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// TestCheckoutShedsWhileDecisionsLag: the ingress watches the orders it
// accepted; while enough of them have waited longer than the decision
// target (the partitions are behind), new checkouts are answered 503 with
// Retry-After at once and publish nothing; once the
// orders are decided, checkouts are accepted again. Not parallel: it
// shortens the package's thresholds.
func TestCheckoutShedsWhileDecisionsLag(t *testing.T) {
	defer func(target time.Duration, toShed int64) { decideTarget, overdueToShed = target, toShed }(decideTarget, overdueToShed)
	decideTarget, overdueToShed = 300*time.Millisecond, 3
	e := newOrderEnv(t)
	sku := e.createSKU(t, newSKU("Lagging", 1500, 100))
	var ids []uuid.UUID
	for range 3 { // no partition runs: nothing is decided
		b := e.newBuyer(t)
		ids = append(ids, e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID)
	}
	// Before the target, checkouts go through.
	b := e.newBuyer(t)
	ids = append(ids, e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID)

	time.Sleep(600 * time.Millisecond)
	late := e.newBuyer(t)
	cmds := e.commandCount(t)
	resp, body := e.checkout(t, late, directBody(late, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	p := wantProblem(t, resp, body, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" || !strings.Contains(p.Detail, "capacity") {
		t.Errorf("shed answer: Retry-After %q, %+v", resp.Header.Get("Retry-After"), p)
	}
	if got := e.commandCount(t); got != cmds {
		t.Errorf("%d commands after a shed checkout, want %d", got, cmds)
	}

	// The partition catches up: checkouts are accepted again.
	for _, id := range ids[:2] {
		e.decide(t, id, order.StatusConfirmed)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, body = e.checkout(t, late, directBody(late, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "k1")
		if resp.StatusCode == http.StatusAccepted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the decisions, checkouts are still refused: %d %s", resp.StatusCode, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// An idempotent replay is not watched twice, and decided orders no longer count.
	resp, _ = e.checkout(t, late, directBody(late, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "k1")
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("Idempotent-Replayed") == "" {
		t.Errorf("replay: %d", resp.StatusCode)
	}
}

package ingress

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// testWebhookSecret signs the test webhooks.
var testWebhookSecret = []byte("whsec-test-0123456789")

// withPayments configures the payment webhook on the database.
func withPayments(e *orderEnv, cfg *Config, d *Deps) {
	cfg.WebhookSecret = string(testWebhookSecret)
	d.Payments = d.SKUs.(PaymentStore) // the test database
}

// payBody is a webhook body for o.
func payBody(o *order.Order, ref string) []byte {
	data, _ := json.Marshal(order.Payment{OrderID: o.ID, Amount: o.GrandTotal, Currency: o.Currency, ProviderRef: ref})
	return data
}

// webhook posts body signed with header sig ("" signs it now with the test
// secret).
func (e *orderEnv) webhook(t *testing.T, body []byte, sig string) (*http.Response, []byte) {
	t.Helper()
	if sig == "" {
		sig = Sign(testWebhookSecret, time.Now(), body)
	}
	return e.doHeaders(t, "POST", "/v1/payments/webhook", "", body, http.Header{SignatureHeader: {sig}})
}

func TestPaymentWebhookPays(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withPayments)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 12000, 10))
	o := e.insertOrder(t, b, sku, order.StatusConfirmed, time.Now(), "", "")
	ch, stop := e.Hub.Wait(o.ID)
	defer stop()

	resp, data := e.webhook(t, payBody(o, "pi_123"), "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d; body %s", resp.StatusCode, data)
	}
	var res paymentResult
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != order.StatusPaid || res.PaidAt == nil || res.Duplicate || res.ProviderRef != "pi_123" {
		t.Errorf("answer %+v", res)
	}
	got := e.getOrder(t, b, o.ID, http.StatusOK)
	wantStatus(t, got, order.StatusPaid)
	var ref string
	var paidAt *time.Time
	if err := e.DB.QueryRow(`SELECT provider_ref, paid_at FROM orders WHERE id = $1`, o.ID).Scan(&ref, &paidAt); err != nil || ref != "pi_123" || paidAt == nil {
		t.Errorf("stored provider_ref %q paid_at %v: %v", ref, paidAt, err)
	}
	var events int
	e.DB.QueryRow(`SELECT count(*) FROM outbox WHERE subject = 'orders.events.order.paid'`).Scan(&events)
	if events != 1 {
		t.Errorf("%d order.paid events in the outbox, want 1", events)
	}
	_ = ch

	// The provider retries: 200, nothing more.
	before := e.snapshot(t)
	resp, data = e.webhook(t, payBody(o, "pi_123"), "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("retry: status %d; body %s", resp.StatusCode, data)
	}
	if err := json.Unmarshal(data, &res); err != nil || !res.Duplicate || res.Status != order.StatusPaid {
		t.Errorf("retry answer %+v %v", res, err)
	}
	e.assertUnchanged(t, before)

	// Paid under another reference: a conflict, and the second payment
	// is to be refunded.
	resp, data = e.webhook(t, payBody(o, "pi_other"), "")
	wantProblem(t, resp, data, http.StatusConflict)
	wantRefusedOnly(t, e, before, o, true)
}

func TestPaymentWebhookNotifies(t *testing.T) {
	t.Parallel()
	notes := make(chan []*order.Order, 1)
	e := newOrderEnv(t, withPayments, func(_ *orderEnv, _ *Config, d *Deps) {
		d.Notify = func(os []*order.Order) error { notes <- os; return nil }
	})
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 500, 10))
	o := e.insertOrder(t, b, sku, order.StatusConfirmed, time.Now(), "", "")
	e.Redis.PutOrders(context.Background(), o)
	resp, data := e.webhook(t, payBody(o, "pi_n"), "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d; body %s", resp.StatusCode, data)
	}
	select {
	case os := <-notes:
		if len(os) != 1 || os[0].Status != order.StatusPaid {
			t.Errorf("note %+v", os)
		}
	default:
		t.Error("no status note")
	}
	cached, err := e.Redis.OrderStatus(context.Background(), o.ID)
	if err != nil || cached.Status != order.StatusPaid {
		t.Errorf("status cache %+v %v, want paid", cached, err)
	}
}

func TestPaymentWebhookRefusals(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withPayments)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 12000, 10))
	confirmed := e.insertOrder(t, b, sku, order.StatusConfirmed, time.Now(), "", "")
	body := payBody(confirmed, "pi_1")
	now := time.Now()
	sign := func(secret []byte, at time.Time, b []byte) string { return Sign(secret, at, b) }
	valid := sign(testWebhookSecret, now, body)
	v1 := valid[strings.Index(valid, "v1="):]
	ts := fmt.Sprint(now.Unix())
	wrongAmount := *confirmed
	wrongAmount.GrandTotal++
	wrongCurrency := *confirmed
	wrongCurrency.Currency = "USD"
	unknown := *confirmed
	unknown.ID = uuid.New()

	before := e.snapshot(t)
	for _, tc := range []struct {
		name string
		body []byte
		sig  string
		want int
	}{
		{"no signature", body, " ", http.StatusUnauthorized},
		{"another secret", body, sign([]byte("nope"), now, body), http.StatusUnauthorized},
		{"another body", body, sign(testWebhookSecret, now, []byte(`{}`)), http.StatusUnauthorized},
		{"too old", body, sign(testWebhookSecret, now.Add(-6*time.Minute), body), http.StatusUnauthorized},
		{"too far ahead", body, sign(testWebhookSecret, now.Add(6*time.Minute), body), http.StatusUnauthorized},
		{"no t", body, v1, http.StatusUnauthorized},
		{"t twice", body, "t=" + ts + ",t=" + ts + "," + v1, http.StatusUnauthorized},
		{"not hex", body, "t=" + ts + ",v1=zz", http.StatusUnauthorized},
		{"malformed JSON", []byte(`{"order_id":`), "", http.StatusBadRequest},
		{"unknown field", []byte(`{"order_id":"` + confirmed.ID.String() + `","amount":1,"currency":"EUR","provider_ref":"x","extra":1}`), "", http.StatusBadRequest},
		{"wrong type", []byte(`{"order_id":"` + confirmed.ID.String() + `","amount":"1","currency":"EUR","provider_ref":"x"}`), "", http.StatusBadRequest},
		{"missing provider_ref", []byte(`{"order_id":"` + confirmed.ID.String() + `","amount":1,"currency":"EUR"}`), "", http.StatusBadRequest},
		{"unknown order", payBody(&unknown, "pi_1"), "", http.StatusNotFound},
		{"wrong amount", payBody(&wrongAmount, "pi_1"), "", http.StatusUnprocessableEntity},
		{"wrong currency", payBody(&wrongCurrency, "pi_1"), "", http.StatusUnprocessableEntity},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := e.webhook(t, tc.body, tc.sig)
			wantProblem(t, resp, data, tc.want)
		})
	}
	// Snapshots scan Redis: one for all the refusals.
	e.assertUnchanged(t, before)

	// Several v1= entries: one valid is enough.
	resp, data := e.webhook(t, body, "t="+ts+",v1="+strings.Repeat("ab", 32)+","+v1)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("with one valid v1 of two: status %d; body %s", resp.StatusCode, data)
	}

	// Not payable: 409, and nothing changes but, for a valid payment of
	// an order that will never be payable again, an order.payment_refused
	// event so that the shop refunds it (SPEC 3.3). A pending order's
	// payment gets none: the provider retries until it is decided.
	for _, st := range []order.Status{order.StatusPending, order.StatusExpired, order.StatusCancelled, order.StatusRejected} {
		t.Run(string(st), func(t *testing.T) {
			o := e.insertOrder(t, b, sku, st, time.Now(), "", "")
			before := e.snapshot(t)
			resp, data := e.webhook(t, payBody(o, "pi_"+string(st)), "")
			wantProblem(t, resp, data, http.StatusConflict)
			wantRefusedOnly(t, e, before, o, st != order.StatusPending)
		})
	}
}

// wantRefusedOnly checks that the stored state is before, but for one
// order.payment_refused event of o in the outbox if refused.
func wantRefusedOnly(t *testing.T, e *orderEnv, before state, o *order.Order, refused bool) {
	t.Helper()
	after := e.snapshot(t)
	var added []string
	for _, row := range after.Tables["outbox"] {
		if !slices.Contains(before.Tables["outbox"], row) {
			added = append(added, row)
		}
	}
	after.Tables["outbox"] = before.Tables["outbox"]
	if diff := cmp.Diff(before, after); diff != "" {
		t.Errorf("the refused payment changed the stored state (-before +after):\n%s", diff)
	}
	want := 0
	if refused {
		want = 1
	}
	if len(added) != want {
		t.Fatalf("%d outbox rows written, want %d order.payment_refused event(s): %v", len(added), want, added)
	}
	if !refused {
		return
	}
	var payloads [][]byte
	if err := e.DB.Select(&payloads, `SELECT payload FROM outbox WHERE subject = $1`, order.EventSubject(order.EventPaymentRefused)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range payloads {
		var ev order.Event
		if err := json.Unmarshal(p, &ev); err != nil {
			t.Fatal(err)
		}
		if ev.Subject == o.ID.String() && ev.Type == order.EventPaymentRefused {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d order.payment_refused events of the order in the outbox, want 1", n)
	}
}

// TestPaymentWebhookAfterHold: a payment that arrives after the order's
// hold ended, before the expiry sweep ran, is refused (409): the order
// stays confirmed (the sweep expires it) and an order.payment_refused
// event is written, once however often the provider retries.
func TestPaymentWebhookAfterHold(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withPayments)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 12000, 10))
	o := e.insertOrder(t, b, sku, order.StatusConfirmed, time.Now(), "", "")
	if _, err := e.DB.Exec(`UPDATE orders SET hold_until = now() - interval '1 second' WHERE id = $1`, o.ID); err != nil {
		t.Fatal(err)
	}
	before := e.snapshot(t)
	for range 2 {
		resp, data := e.webhook(t, payBody(o, "pi_late"), "")
		wantProblem(t, resp, data, http.StatusConflict)
	}
	wantRefusedOnly(t, e, before, o, true)
}

func TestPaymentWebhookNotConfigured(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	resp, data := e.webhook(t, []byte(`{}`), "")
	p := wantProblem(t, resp, data, http.StatusServiceUnavailable)
	if !strings.Contains(p.Detail, "payments not configured") {
		t.Errorf("detail %q", p.Detail)
	}
}

func TestPaymentWebhookTooLarge(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, withPayments)
	body := []byte(`{"provider_ref":"` + strings.Repeat("x", MaxBodyBytes) + `"}`)
	resp, data := e.webhook(t, body, "")
	wantProblem(t, resp, data, http.StatusRequestEntityTooLarge)
}

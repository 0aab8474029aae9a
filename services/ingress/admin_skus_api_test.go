package ingress

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// withSKUAdmin configures the admin's SKU operations on the database.
func withSKUAdmin(_ *testEnv, _ *Config, d *Deps) { d.SKUAdmin = d.SKUs.(SKUAdminStore) }

// patch sends a merge patch of SKU id.
func (e *testEnv) patch(t *testing.T, id uuid.UUID, token, body, contentType string) (*http.Response, []byte) {
	t.Helper()
	return e.doHeaders(t, "PATCH", "/v1/skus/"+id.String(), token, body, http.Header{"Content-Type": {contentType}})
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, withSKUAdmin)
	admin := e.adminToken(t)
	sku := e.createSKU(t, newSKU("Hot", 100, 10))
	for _, step := range []struct {
		path   string
		paused bool
	}{{"pause", true}, {"pause", true}, {"resume", false}, {"resume", false}} {
		var got order.SKU
		e.mustDo(t, "POST", "/v1/skus/"+sku.ID.String()+"/"+step.path, admin, nil, http.StatusOK, &got)
		if got.Paused != step.paused || got.ID != sku.ID {
			t.Errorf("%s: %+v, want paused %v", step.path, got, step.paused)
		}
	}
	var audit auditList
	e.mustDo(t, "GET", "/v1/skus/"+sku.ID.String()+"/audit", admin, nil, http.StatusOK, &audit)
	if len(audit.Items) != 2 || audit.Items[0].Action != order.AuditResume || audit.Items[1].Action != order.AuditPause || audit.Items[1].Actor != "admin" {
		t.Errorf("audit %+v, want resume then pause by admin", audit.Items)
	}

	user := e.token(t, "u1")
	before := e.snapshot(t)
	for _, r := range []struct{ method, path string }{
		{"POST", "/v1/skus/" + sku.ID.String() + "/pause"},
		{"POST", "/v1/skus/" + sku.ID.String() + "/resume"},
		{"PATCH", "/v1/skus/" + sku.ID.String()},
		{"GET", "/v1/skus/" + sku.ID.String() + "/audit"},
	} {
		resp, data := e.do(t, r.method, r.path, user, `{"price":1}`)
		wantProblem(t, resp, data, http.StatusForbidden)
		resp, data = e.do(t, r.method, r.path, "", `{"price":1}`)
		wantProblem(t, resp, data, http.StatusUnauthorized)
	}
	e.assertUnchanged(t, before)
	for _, path := range []string{"/v1/skus/" + uuid.NewString() + "/pause", "/v1/skus/nope/resume", "/v1/skus/" + uuid.NewString() + "/audit"} {
		method := "POST"
		if strings.HasSuffix(path, "audit") {
			method = "GET"
		}
		resp, data := e.do(t, method, path, admin, nil)
		wantProblem(t, resp, data, http.StatusNotFound)
	}
}

func TestPausedSKUCheckoutRefusedAtOnce(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, func(_ *orderEnv, cfg *Config, d *Deps) { d.SKUAdmin = d.SKUs.(SKUAdminStore) })
	b := e.newBuyer(t)
	admin := e.adminToken(t)
	sku := e.createSKU(t, newSKU("Hot", 100, 10))
	body := directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1})
	e.mustCheckout(t, b, body, "") // the SKU is now cached as on sale
	e.mustDo(t, "POST", "/v1/skus/"+sku.ID.String()+"/pause", admin, nil, http.StatusOK, nil)
	resp, data := e.checkout(t, b, body, "")
	p := wantProblem(t, resp, data, http.StatusConflict)
	if !strings.HasSuffix(p.Type, "sale-paused") {
		t.Errorf("problem type %q", p.Type)
	}
	// Preview still works.
	e.mustDo(t, "POST", "/v1/checkout/preview", b.Token, map[string]any{"items": []order.LineRequest{{SKUID: sku.ID, Quantity: 1}}}, http.StatusOK, nil)
	e.mustDo(t, "POST", "/v1/skus/"+sku.ID.String()+"/resume", admin, nil, http.StatusOK, nil)
	e.mustCheckout(t, b, body, "")
	if n := len(e.commands(t)); n != 2 {
		t.Errorf("%d commands published, want 2", n)
	}
}

// TestPausedElsewhereReachesTheCache pauses a SKU behind the ingress's back
// (another ingress process): checkouts are refused within the cache's TTL.
func TestPausedElsewhereReachesTheCache(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Hot", 100, 10))
	body := directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1})
	e.mustCheckout(t, b, body, "")
	if _, err := e.DB.Exec(`UPDATE skus SET paused = true WHERE id = $1`, sku.ID); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, data := e.checkout(t, b, body, "")
		if resp.StatusCode == http.StatusConflict {
			break
		}
		if resp.StatusCode != http.StatusAccepted || time.Now().After(deadline) {
			t.Fatalf("status %d after the pause; body %s", resp.StatusCode, data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCheckoutQuotesPrices(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t, func(_ *orderEnv, cfg *Config, d *Deps) { d.SKUAdmin = d.SKUs.(SKUAdminStore) })
	b := e.newBuyer(t)
	admin := e.adminToken(t)
	sku := e.createSKU(t, newSKU("Hot", 100, 10))
	e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	e.mustDo(t, "PATCH", "/v1/skus/"+sku.ID.String(), admin, `{"price":250}`, http.StatusOK, nil)
	e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "")
	cmds := e.commands(t)
	if len(cmds) != 2 {
		t.Fatalf("%d commands", len(cmds))
	}
	for i, want := range []int64{100, 250} {
		if got, ok := cmds[i].Checkout.QuotedPrice(sku.ID); !ok || got != want {
			t.Errorf("command %d quotes %d (%v), want %d", i, got, ok, want)
		}
	}
}

func TestPatchSKU(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, withSKUAdmin)
	admin := e.adminToken(t)
	n := newSKU("Sneaker", 100, 10)
	n.PerUserLimit = ptr(int64(2))
	sku := e.createSKU(t, n)
	start := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

	resp, data := e.patch(t, sku.ID, admin, `{"name":"Sneaker v2","price":150,"per_user_limit":null,"sale_starts_at":"2030-01-02T03:04:05Z","payment_hold_seconds":60}`, "application/merge-patch+json")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d; body %s", resp.StatusCode, data)
	}
	var got order.SKU
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if got.Name != "Sneaker v2" || got.Price != 150 || got.PerUserLimit != nil || got.SaleStartsAt == nil || !got.SaleStartsAt.Equal(start) ||
		got.PaymentHoldSeconds == nil || *got.PaymentHoldSeconds != 60 || got.Stock != 10 || got.Currency != "EUR" {
		t.Errorf("patched SKU %+v", got)
	}
	// application/json is accepted too; an empty patch changes nothing.
	e.mustDo(t, "PATCH", "/v1/skus/"+sku.ID.String(), admin, `{"sale_starts_at":null}`, http.StatusOK, &got)
	if got.SaleStartsAt != nil {
		t.Errorf("sale_starts_at %v, want cleared", got.SaleStartsAt)
	}
	e.mustDo(t, "PATCH", "/v1/skus/"+sku.ID.String(), admin, `{}`, http.StatusOK, nil)

	var audit auditList
	e.mustDo(t, "GET", "/v1/skus/"+sku.ID.String()+"/audit", admin, nil, http.StatusOK, &audit)
	if len(audit.Items) != 2 {
		t.Fatalf("%d audit entries, want 2", len(audit.Items))
	}
	var before, after order.SKU
	json.Unmarshal(audit.Items[1].Before, &before)
	json.Unmarshal(audit.Items[1].After, &after)
	if before.Price != 100 || after.Price != 150 || audit.Items[1].Actor != "admin" || audit.Items[1].Action != order.AuditUpdate {
		t.Errorf("audit entry %+v", audit.Items[1])
	}

	stored := e.snapshot(t)
	for _, tc := range []struct {
		name, body, ct string
		want           int
		field          string
	}{
		{"stock", `{"stock":5}`, "application/merge-patch+json", 422, "stock"},
		{"currency", `{"currency":"USD"}`, "application/merge-patch+json", 422, "currency"},
		{"unknown field", `{"colour":"red"}`, "application/merge-patch+json", 400, ""},
		{"read-only field", `{"units_sold":5}`, "application/merge-patch+json", 400, ""},
		{"not an object", `[1]`, "application/merge-patch+json", 400, ""},
		{"null body", `null`, "application/merge-patch+json", 400, ""},
		{"malformed", `{"price":`, "application/merge-patch+json", 400, ""},
		{"price null", `{"price":null}`, "application/merge-patch+json", 422, "price"},
		{"price negative", `{"price":-1}`, "application/merge-patch+json", 422, "price"},
		{"price a string", `{"price":"1"}`, "application/merge-patch+json", 422, "price"},
		{"name empty", `{"name":" "}`, "application/merge-patch+json", 422, "name"},
		{"hold zero", `{"payment_hold_seconds":0}`, "application/merge-patch+json", 422, "payment_hold_seconds"},
		{"limit too big", `{"per_user_limit":100000}`, "application/merge-patch+json", 422, "per_user_limit"},
		{"bad time", `{"sale_ends_at":"tomorrow"}`, "application/merge-patch+json", 422, "sale_ends_at"},
		{"window as a whole", `{"sale_starts_at":"2030-01-02T00:00:00Z","sale_ends_at":"2030-01-01T00:00:00Z"}`, "application/merge-patch+json", 422, "sale_ends_at"},
		{"text", `{"price":1}`, "text/plain", 415, ""},
		{"too large", `{"name":"` + strings.Repeat("x", MaxBodyBytes) + `"}`, "application/merge-patch+json", 413, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, data := e.patch(t, sku.ID, admin, tc.body, tc.ct)
			p := wantProblem(t, resp, data, tc.want)
			if tc.field != "" && !p.hasField(tc.field) {
				t.Errorf("problem %+v does not name %s", p, tc.field)
			}
		})
	}
	e.assertUnchanged(t, stored) // one snapshot for all: they scan Redis
	resp, data = e.patch(t, uuid.New(), admin, `{"price":1}`, "application/merge-patch+json")
	wantProblem(t, resp, data, http.StatusNotFound)
}

package ingress

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestBadBodies sends every kind of broken body to every route that takes
// one and checks the problem it answers and that nothing changed.
func TestBadBodies(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice, admin := e.token(t, "alice"), e.adminToken(t)
	sku := e.createSKU(t, newSKU("Phone", 100, 10))
	e.createAddress(t, alice, newAddress("Alice"))
	e.mustDo(t, "PUT", "/v1/cart/items/"+sku.ID.String(), alice, `{"quantity":1}`, http.StatusOK, nil)

	// valid is a good body of each route; wrong, one with a value of the
	// wrong JSON type.
	routes := []struct {
		method, path, token, valid, wrong string
	}{
		{"POST", "/v1/skus", admin, `{"name":"Case","price":100,"currency":"EUR","stock":1}`, `{"name":"Case","price":"100","currency":"EUR","stock":1}`},
		{"POST", "/v1/addresses", alice, `{"recipient":"A","line1":"1 Road","city":"Paris","postal_code":"75001","country":"FR"}`, `{"recipient":["A"],"line1":"1 Road","city":"Paris","postal_code":"75001","country":"FR"}`},
		{"PUT", "/v1/cart/items/" + sku.ID.String(), alice, `{"quantity":2}`, `{"quantity":"abc"}`},
		{"POST", "/v1/checkout/preview", alice, `{"items":[{"sku_id":"` + sku.ID.String() + `","quantity":1}]}`, `{"items":{"sku_id":"` + sku.ID.String() + `"}}`},
	}
	big := func(valid string) string { // over 64 KiB, valid JSON but for its size
		return valid[:len(valid)-1] + `,"pad":"` + strings.Repeat("x", 70<<10) + `"}`
	}
	cases := []struct {
		name string
		body func(valid string) string
		ct   string
		want int
	}{
		{"empty", func(string) string { return "" }, "", 400},
		{"whitespace", func(string) string { return " \n\t" }, "", 400},
		{"malformed", func(v string) string { return v[:len(v)-3] }, "", 400},
		{"not JSON", func(string) string { return "quantity=1" }, "", 400},
		{"single quotes", func(v string) string { return strings.ReplaceAll(v, `"`, `'`) }, "", 400},
		{"unknown field", func(v string) string { return v[:len(v)-1] + `,"evil":true}` }, "", 400},
		{"unknown field only", func(string) string { return `{"evil":1}` }, "", 400},
		{"trailing data", func(v string) string { return v + `{}` }, "", 400},
		{"trailing garbage", func(v string) string { return v + `x` }, "", 400},
		{"two values", func(v string) string { return v + "\n" + v }, "", 400},
		{"array", func(v string) string { return "[" + v + "]" }, "", 400},
		{"string", func(string) string { return `"hello"` }, "", 400},
		{"number", func(string) string { return `42` }, "", 400},
		{"null", func(string) string { return `null` }, "", 422},
		{"70 KiB", big, "", 413},
		{"70 KiB of whitespace", func(v string) string { return v + strings.Repeat(" ", 70<<10) }, "", 413},
		{"text/plain", func(v string) string { return v }, "text/plain", 415},
		{"form", func(v string) string { return v }, "application/x-www-form-urlencoded", 415},
		{"bad content type", func(v string) string { return v }, ";;", 415},
	}
	for _, r := range routes {
		// The good body passes, so the failures below are about the body.
		t.Run(r.method+" "+r.path+" valid", func(t *testing.T) {
			before := e.snapshot(t)
			resp, body := e.do(t, r.method, r.path, r.token, r.valid)
			if resp.StatusCode >= 300 {
				t.Fatalf("valid body: %d %s", resp.StatusCode, body)
			}
			if r.path == "/v1/checkout/preview" {
				e.assertUnchanged(t, before)
			}
		})
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s %s %s", r.method, r.path, c.name), func(t *testing.T) {
				before := e.snapshot(t)
				var hdr http.Header
				if c.ct != "" {
					hdr = http.Header{"Content-Type": {c.ct}}
				}
				resp, body := e.doHeaders(t, r.method, r.path, r.token, c.body(r.valid), hdr)
				wantProblem(t, resp, body, c.want)
				e.assertUnchanged(t, before)
			})
		}
		t.Run(r.method+" "+r.path+" wrong types", func(t *testing.T) {
			before := e.snapshot(t)
			resp, body := e.do(t, r.method, r.path, r.token, r.wrong)
			if p := wantProblem(t, resp, body, http.StatusUnprocessableEntity); len(p.Errors) == 0 {
				t.Errorf("no field named: %s", body)
			}
			e.assertUnchanged(t, before)
		})
	}
}

// TestBodyLimitBoundary checks that a body of exactly 64 KiB is read and
// one byte more is 413.
func TestBodyLimitBoundary(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	pad := func(n int) string {
		prefix, suffix := `{"cart_sku_ids":["`, `"]}`
		return prefix + strings.Repeat("a", n-len(prefix)-len(suffix)) + suffix
	}
	// Exactly the limit: read in full, then refused for its value (422).
	resp, body := e.do(t, "POST", "/v1/checkout/preview", alice, pad(MaxBodyBytes))
	wantProblem(t, resp, body, http.StatusUnprocessableEntity)
	resp, body = e.do(t, "POST", "/v1/checkout/preview", alice, pad(MaxBodyBytes+1))
	wantProblem(t, resp, body, http.StatusRequestEntityTooLarge)
}

package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/auth"
)

func TestBareCheckout(t *testing.T) {
	secret := []byte("benchlimits-test-secret")
	srv := httptest.NewServer(newBareHandler(secret))
	defer srv.Close()
	tok, err := auth.Mint(secret, "u1", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sku, addr := uuid.New(), uuid.New()
	good := `{"address_id":"` + addr.String() + `","payment_method":"card","items":[{"sku_id":"` + sku.String() + `","quantity":1}]}`
	post := func(token, key, body string) (*http.Response, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("POST", srv.URL+"/v1/orders", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if key != "" {
			req.Header.Set("Idempotency-Key", key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		json.NewDecoder(resp.Body).Decode(&m)
		return resp, m
	}

	resp, m := post(tok, "k1", good)
	if resp.StatusCode != 202 {
		t.Fatalf("status %d %v", resp.StatusCode, m)
	}
	id, _ := uuid.Parse(m["order_id"].(string))
	if id == uuid.Nil || m["status"] != "pending" || resp.Header.Get("Location") != "/v1/orders/"+id.String() {
		t.Errorf("answer %v, Location %q", m, resp.Header.Get("Location"))
	}
	if _, again := post(tok, "k1", good); again["order_id"] != m["order_id"] {
		t.Errorf("the same key and body gave another id: %v, %v", again["order_id"], m["order_id"])
	}

	for _, c := range []struct {
		name, token, body string
		want              int
	}{
		{"no token", "", good, 401},
		{"bad token", tok + "x", good, 401},
		{"unknown field", tok, strings.TrimSuffix(good, "}") + `,"price":1}`, 400},
		{"not JSON", tok, "{", 400},
		{"trailing data", tok, good + "{}", 400},
		{"zero quantity", tok, strings.Replace(good, `"quantity":1`, `"quantity":0`, 1), 422},
		{"bad payment method", tok, strings.Replace(good, "card", "gold", 1), 422},
		{"too large", tok, `{"address_id":"` + strings.Repeat("a", 70<<10) + `"}`, 413},
	} {
		if resp, m := post(c.token, "", c.body); resp.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d (%v)", c.name, resp.StatusCode, c.want, m)
		}
	}

	// flashbench's setup.
	req, _ := http.NewRequest("POST", srv.URL+"/v1/addresses", strings.NewReader(`{"recipient":"R"}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var a map[string]any
	json.NewDecoder(r2.Body).Decode(&a)
	r2.Body.Close()
	if r2.StatusCode != 201 || a["id"] == nil || a["recipient"] != "R" {
		t.Errorf("create address: %d %v", r2.StatusCode, a)
	}
}

func TestRunUsage(t *testing.T) {
	var stderr strings.Builder
	if code := run(t.Context(), nil, func(string) string { return "" }, &stderr); code != 2 {
		t.Errorf("no subcommand: exit %d", code)
	}
	if code := run(t.Context(), []string{"http"}, func(string) string { return "" }, &stderr); code != 2 {
		t.Errorf("no secret: exit %d", code)
	}
}

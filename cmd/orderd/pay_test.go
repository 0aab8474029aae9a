package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// TestPayCommand runs orderd serve with a webhook secret, confirms an
// order, and pays it with orderd pay, which reads the amount from the
// database and signs the webhook.
func TestPayCommand(t *testing.T) {
	const secret = "whsec-serve-test-0123456789abcdef" // over the 32 bytes required outside development mode
	dsn, _ := pgtest.New(t)
	_, prefix := redistest.New(t)
	p := startOrderd(t, "serve",
		"--database-url", dsn, "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--http-addr", "127.0.0.1:0", "--nats-embedded-addr", "127.0.0.1:0", "--nats-store-dir", t.TempDir(),
		"--partitions", "2", "--shutdown-timeout", "5s", "--payment-webhook-secret", secret)
	base := p.base
	admin, _ := auth.Mint([]byte(testSecret), "admin", true, time.Hour)
	user, _ := auth.Mint([]byte(testSecret), "buyer-pay", false, time.Hour)
	call := func(method, path, token, body string, want int) map[string]any {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, raw, want)
		}
		var out map[string]any
		json.Unmarshal(raw, &out)
		return out
	}
	sku := call("POST", "/v1/skus", admin, `{"name":"sneaker","price":12900,"currency":"EUR","stock":5}`, 201)["id"].(string)
	addr := call("POST", "/v1/addresses", user, `{"recipient":"Ada","line1":"1 Main St","city":"Berlin","postal_code":"10115","country":"DE"}`, 201)["id"].(string)
	id := call("POST", "/v1/orders", user, `{"address_id":"`+addr+`","payment_method":"card","items":[{"sku_id":"`+sku+`","quantity":1}]}`, 202)["order_id"].(string)
	deadline := time.Now().Add(20 * time.Second)
	for call("GET", "/v1/orders/"+id+"?wait=5s", user, "", 200)["status"] != "confirmed" {
		if time.Now().After(deadline) {
			t.Fatalf("order %s not confirmed", id)
		}
	}

	ctx := context.Background()
	var out bytes.Buffer
	// A wrong amount is refused, and pay says so.
	err := runPay(ctx, []string{"--order", id, "--url", base, "--amount", "1", "--currency", "EUR", "--payment-webhook-secret", secret}, &out)
	if err == nil || !strings.Contains(err.Error(), "422") {
		t.Errorf("wrong amount: %v, want a 422", err)
	}
	// The wrong secret: 401.
	err = runPay(ctx, []string{"--order", id, "--url", base, "--database-url", dsn, "--payment-webhook-secret", "nope"}, &out)
	if err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong secret: %v, want a 401", err)
	}
	out.Reset()
	if err := runPay(ctx, []string{"--order", id, "--url", base, "--database-url", dsn, "--payment-webhook-secret", secret, "--provider-ref", "pi_serve"}, &out); err != nil {
		t.Fatalf("pay: %v", err)
	}
	if !strings.Contains(out.String(), `"status":"paid"`) {
		t.Errorf("pay printed %s", out.String())
	}
	if got := call("GET", "/v1/orders/"+id, user, "", 200)["status"]; got != "paid" {
		t.Errorf("order is %v, want paid", got)
	}
	if err := runPay(ctx, []string{"--order", "nope"}, &out); err == nil {
		t.Error("pay without a valid order id succeeded")
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/services/ingress"
)

const payUsage = `usage: orderd pay --order ID [--url URL] [--amount N --currency CUR] [--provider-ref REF]

Plays the payment provider for development: sends POST /v1/payments/webhook
for the order, signed with PAYMENT_WEBHOOK_SECRET. Nothing secret comes from
the server: the amount and currency are --amount and --currency, or else the
order's grand total and currency read from DATABASE_URL.

Options:
`

// defaultDatabaseURL is DATABASE_URL's default, as for orderd serve.
const defaultDatabaseURL = "postgres://orderd:orderd@127.0.0.1:5432/orderd?sslmode=disable"

// payOptions are the options of orderd pay.
type payOptions struct {
	order       string
	url         string
	amount      int64
	currency    string
	providerRef string
	secret      string
	databaseURL string
	timeout     time.Duration
}

// runPay is orderd pay: it signs and sends one payment webhook and prints
// the answer. An answer other than 2xx is an error (exit 1).
func runPay(ctx context.Context, args []string, stdout io.Writer) error {
	var o payOptions
	fs := flag.NewFlagSet("orderd pay", flag.ContinueOnError)
	fs.SetOutput(stdout)
	fs.Usage = func() { fmt.Fprint(stdout, payUsage); fs.PrintDefaults() }
	fs.StringVar(&o.order, "order", "", "the order id (required)")
	fs.StringVar(&o.url, "url", envOr("ORDERD_URL", "http://127.0.0.1:8080"), "the service's base URL (env ORDERD_URL)")
	fs.Int64Var(&o.amount, "amount", -1, "the amount paid in minor units (default: the order's grand total, from DATABASE_URL)")
	fs.StringVar(&o.currency, "currency", "", "the currency paid (default: the order's, from DATABASE_URL)")
	fs.StringVar(&o.providerRef, "provider-ref", "", "the provider's payment reference (default: a fresh one)")
	fs.StringVar(&o.secret, "payment-webhook-secret", os.Getenv("PAYMENT_WEBHOOK_SECRET"), "the webhook secret (env PAYMENT_WEBHOOK_SECRET)")
	fs.StringVar(&o.databaseURL, "database-url", envOr("DATABASE_URL", defaultDatabaseURL), "where to read the order's amount (env DATABASE_URL)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "how long to wait for the answer")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("pay takes no arguments, got %q (see orderd pay --help)", fs.Args())}
	}
	id, err := uuid.Parse(o.order)
	if err != nil {
		return usageError{fmt.Errorf("--order must be an order id, got %q", o.order)}
	}
	if o.secret == "" {
		return usageError{errors.New("PAYMENT_WEBHOOK_SECRET is required to sign the webhook")}
	}
	if o.providerRef == "" {
		o.providerRef = "dev_" + uuid.NewString()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	if o.amount < 0 || o.currency == "" {
		if o.databaseURL == "" {
			return usageError{errors.New("give --amount and --currency, or DATABASE_URL to read them from the order")}
		}
		db, err := postgres.Open(ctx, o.databaseURL, 1)
		if err != nil {
			return err
		}
		ord, err := db.Order(ctx, id)
		db.Close()
		if err != nil {
			return fmt.Errorf("read order %s: %w", id, err)
		}
		if o.amount < 0 {
			o.amount = ord.GrandTotal
		}
		if o.currency == "" {
			o.currency = ord.Currency
		}
	}
	body, err := json.Marshal(order.Payment{OrderID: id, Amount: o.amount, Currency: o.currency, ProviderRef: o.providerRef})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.url+"/v1/payments/webhook", bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("pay: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(ingress.SignatureHeader, ingress.Sign([]byte(o.secret), time.Now(), body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("pay: %w", err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("pay: the webhook answered %s: %s", resp.Status, bytes.TrimSpace(answer))
	}
	fmt.Fprintf(stdout, "%s\n", bytes.TrimSpace(answer))
	return nil
}

// envOr returns the environment variable name, or def if it is empty.
func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

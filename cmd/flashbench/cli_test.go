package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseConfig(t *testing.T) {
	tests := []struct {
		name  string
		args  string
		env   map[string]string
		check func(t *testing.T, c Config)
	}{
		{"hot-sku defaults of SPEC 7", "hot-sku --jwt-secret s", nil, func(t *testing.T, c Config) {
			if c.URL != defaultURL {
				t.Errorf("url %q, want %q", c.URL, defaultURL)
			}
			if c.Stock != 10000 || c.Buyers != 50000 || c.Concurrency != 64 || c.Rate != 0 || c.Wait != "poll" {
				t.Errorf("S=%d N=%d C=%d rate=%g wait=%s", c.Stock, c.Buyers, c.Concurrency, c.Rate, c.Wait)
			}
		}},
		{"sold-out is N = 10 x S", "sold-out --url http://x --jwt-secret s --stock 70", nil, func(t *testing.T, c Config) {
			if c.Buyers != 700 {
				t.Errorf("N = %d, want 700", c.Buyers)
			}
		}},
		{"sold-out with N given", "sold-out --url http://x --jwt-secret s --stock 70 --buyers 80", nil, func(t *testing.T, c Config) {
			if c.Buyers != 80 {
				t.Errorf("N = %d, want 80", c.Buyers)
			}
		}},
		{"scenario after the flags", "--url http://x --jwt-secret s --stock 5 cart-mix --skus 3", nil, func(t *testing.T, c Config) {
			if c.Scenario != ScenarioCartMix || c.SKUs != 3 || c.Stock != 5 {
				t.Errorf("scenario %q skus %d stock %d", c.Scenario, c.SKUs, c.Stock)
			}
		}},
		{"environment fallbacks", "preview", map[string]string{
			"FLASHBENCH_URL": "http://e", "JWT_SECRET": "es", "DATABASE_URL": "postgres://d", "NATS_URL": "nats://n",
		}, func(t *testing.T, c Config) {
			if c.URL != "http://e" || c.JWTSecret != "es" || c.DatabaseURL != "postgres://d" || c.NATSURL != "nats://n" {
				t.Errorf("%+v", c)
			}
			if c.Duration != 10*time.Second {
				t.Errorf("preview duration %s, want 10s", c.Duration)
			}
		}},
		{"flags beat the environment", "hot-sku --url http://f --jwt-secret fs", map[string]string{"FLASHBENCH_URL": "http://e", "JWT_SECRET": "es"}, func(t *testing.T, c Config) {
			if c.URL != "http://f" || c.JWTSecret != "fs" {
				t.Errorf("url %s secret %s", c.URL, c.JWTSecret)
			}
		}},
		{"open model", "hot-sku --url http://x --jwt-secret s --rate 2500 --concurrency 8 --wait sse", nil, func(t *testing.T, c Config) {
			if c.Rate != 2500 || c.Concurrency != 8 || c.Waiters != 1024 || c.Wait != "sse" {
				t.Errorf("rate %g C %d waiters %d wait %s", c.Rate, c.Concurrency, c.Waiters, c.Wait)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := parseConfig(strings.Fields(tt.args), env(tt.env), io.Discard)
			if err != nil {
				t.Fatalf("parseConfig: %v", err)
			}
			tt.check(t, c)
		})
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct{ name, args, want string }{
		{"no scenario", "--url http://x --jwt-secret s", "no scenario"},
		{"unknown scenario", "flood --url http://x --jwt-secret s", "unknown scenario"},
		{"empty url", "hot-sku --url= --jwt-secret s", "--url"},
		{"no secret", "hot-sku --url http://x", "--jwt-secret"},
		{"bad wait", "hot-sku --url http://x --jwt-secret s --wait carrier-pigeon", "--wait"},
		{"extra argument", "hot-sku --url http://x --jwt-secret s extra", "unexpected"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseConfig(strings.Fields(tt.args), env(nil), io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestHelpDoesNotPrintSecrets(t *testing.T) {
	var out strings.Builder
	_, err := parseConfig([]string{"--help"}, env(map[string]string{"JWT_SECRET": "topsecret", "DATABASE_URL": "postgres://u:pw@h/db"}), &out)
	if err == nil {
		t.Fatal("--help: no error")
	}
	if strings.Contains(out.String(), "topsecret") || strings.Contains(out.String(), "pw@") {
		t.Errorf("--help prints a secret:\n%s", out.String())
	}
}

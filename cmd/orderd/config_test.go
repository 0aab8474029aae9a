package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/flashsale/orderd/pkg/auth"
)

const testSecret = "test-secret-0123456789abcdef0123456789"

// clearEnv unsets every option's environment variable for the test, so that
// the machine's environment does not leak into it.
func clearEnv(t *testing.T) {
	t.Helper()
	for _, o := range options {
		if o.env != "" {
			t.Setenv(o.env, "") // restores the old value when the test ends
			os.Unsetenv(o.env)
		}
	}
}

func TestParseConfigDefaults(t *testing.T) {
	clearEnv(t)
	c, rest, err := parseConfig(RoleServe, "", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(rest) != 0 {
		t.Errorf("rest = %q, want none", rest)
	}
	want := Config{
		DatabaseURL:        "postgres://orderd:orderd@127.0.0.1:5432/orderd?sslmode=disable",
		DBMaxConns:         20,
		RedisURL:           "redis://127.0.0.1:6379/0",
		NATSEmbeddedAddr:   "127.0.0.1:4222",
		NATSStoreDir:       "./data/nats",
		NATSSync:           "always",
		StreamReplicas:     1,
		HTTPAddr:           ":8080",
		ShippingFee:        1000,
		PublishTimeout:     3 * time.Second,
		PublishBatch:       true,
		Partitions:         16,
		PaymentHold:        15 * time.Minute,
		BatchSize:          500,
		PinTTL:             5 * time.Second,
		AckWait:            10 * time.Second,
		MaxDeliver:         10,
		ReservationTimeout: 10 * time.Second,
		WorkerName:         c.WorkerName, // hostname-pid, checked below
		ShutdownTimeout:    20 * time.Second,
		LogLevel:           "info",

		CheckoutRate:         5,
		CheckoutBurst:        10,
		CheckoutInflight:     2,
		MaxInflightCheckouts: 4096,

		JWTAdminClaim: "admin,role=admin",
		JWTCacheSize:  200_000,

		WriteRate:  20,
		WriteBurst: 40,

		HTTPMaxConns:   16384,
		StreamsPerUser: 8,
		StreamsTotal:   10000,
	}
	if diff := cmp.Diff(want, *c); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if !strings.Contains(c.WorkerName, "-") {
		t.Errorf("WorkerName = %q, want hostname-pid", c.WorkerName)
	}
	// Without JWT_SECRET serve is refused.
	if err := c.Validate(RoleServe); err == nil || !strings.Contains(err.Error(), "JWT_SECRET is required") {
		t.Errorf("Validate without JWT_SECRET = %v, want JWT_SECRET is required", err)
	}
	c.JWTSecret = testSecret
	if err := c.Validate(RoleServe); err != nil {
		t.Errorf("Validate(defaults + secret) = %v", err)
	}
}

func TestParseConfigEnvThenFlag(t *testing.T) {
	clearEnv(t)
	t.Setenv("PARTITIONS", "32")
	t.Setenv("PAYMENT_HOLD", "90s")
	t.Setenv("NO_MIGRATE", "true")
	t.Setenv("NATS_URL", "nats://a:4222")
	t.Setenv("SHIPPING_FEE", "0")
	t.Setenv("WORKER_NAME", "w1")
	c, rest, err := parseConfig(RoleServe, "", []string{"--partitions", "8", "--shipping-fee=250", "--no-migrate=false", "extra"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.Partitions, c.PaymentHold, c.NoMigrate, c.NATSURL, c.ShippingFee, c.WorkerName, rest}
	want := []any{8, 90 * time.Second, false, "nats://a:4222", int64(250), "w1", []string{"extra"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("flag over env over default (-want +got):\n%s", diff)
	}
	t.Setenv("NO_MIGRATE", "1")
	if c, _, _ := parseConfig(RoleServe, "", nil, io.Discard); !c.NoMigrate {
		t.Error("NO_MIGRATE=1: NoMigrate = false")
	}
	if c, _, _ := parseConfig(RoleServe, "", []string{"--no-migrate=false"}, io.Discard); c.NoMigrate {
		t.Error("--no-migrate=false over NO_MIGRATE=1: NoMigrate = true")
	}
}

func TestParseConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"bad env int", map[string]string{"PARTITIONS": "many"}, nil, `PARTITIONS="many"`},
		{"bad env duration", map[string]string{"PAYMENT_HOLD": "15"}, nil, `PAYMENT_HOLD="15"`},
		{"bad env bool", map[string]string{"NO_MIGRATE": "maybe"}, nil, `NO_MIGRATE="maybe"`},
		{"bad flag", nil, []string{"--partitions", "x"}, "-partitions"},
		{"unknown flag", nil, []string{"--nope"}, "flag provided but not defined"},
		{"secret not echoed", map[string]string{"JWT_SECRET": ""}, []string{"--jwt-secret"}, "flag needs an argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_, _, err := parseConfig(RoleServe, "", tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	base := func(t *testing.T, role Role) *Config {
		t.Helper()
		clearEnv(t)
		c, _, err := parseConfig(role, "", nil, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		c.JWTSecret = testSecret
		c.TokenSub = "u1"
		return c
	}
	tests := []struct {
		name   string
		role   Role
		change func(c *Config)
		want   string // "" for valid
	}{
		{"serve defaults", RoleServe, func(c *Config) {}, ""},
		{"short secret", RoleServe, func(c *Config) { c.JWTSecret = "short" }, "at least 32 bytes"},
		{"api needs NATS_URL", RoleAPI, func(c *Config) {}, "NATS_URL is required for api"},
		{"worker needs NATS_URL", RoleWorker, func(c *Config) {}, "NATS_URL is required for worker"},
		{"worker with NATS_URL", RoleWorker, func(c *Config) { c.NATSURL = "nats://n1:4222,nats://n2:4222" }, ""},
		{"worker needs no JWT", RoleWorker, func(c *Config) { c.NATSURL = "nats://n:4222"; c.JWTSecret = "" }, ""},
		{"bad NATS_URL", RoleWorker, func(c *Config) { c.NATSURL = "n:4222:x" }, "NATS_URL"},
		{"partitions 0", RoleServe, func(c *Config) { c.Partitions = 0 }, "PARTITIONS must be 1 to 1024"},
		{"replicas 7", RoleServe, func(c *Config) { c.StreamReplicas = 7 }, "STREAM_REPLICAS"},
		{"negative fee", RoleServe, func(c *Config) { c.ShippingFee = -1 }, "SHIPPING_FEE"},
		{"hold under 1s", RoleServe, func(c *Config) { c.PaymentHold = time.Millisecond }, "PAYMENT_HOLD"},
		{"nats sync 2m", RoleServe, func(c *Config) { c.NATSSync = "2m" }, ""},
		{"nats sync 1s", RoleServe, func(c *Config) { c.NATSSync = "1s" }, "NATS_SYNC"},
		{"nats sync junk", RoleServe, func(c *Config) { c.NATSSync = "never" }, "NATS_SYNC"},
		{"embedded addr", RoleServe, func(c *Config) { c.NATSEmbeddedAddr = "4222" }, "NATS_EMBEDDED_ADDR"},
		{"embedded addr ignored with NATS_URL", RoleServe, func(c *Config) { c.NATSEmbeddedAddr = "x"; c.NATSURL = "nats://n:4222" }, ""},
		{"http addr", RoleAPI, func(c *Config) { c.NATSURL = "nats://n:4222"; c.HTTPAddr = "8080" }, "HTTP_ADDR"},
		{"log level", RoleServe, func(c *Config) { c.LogLevel = "loud" }, "LOG_LEVEL"},
		{"worker name", RoleServe, func(c *Config) { c.WorkerName = "a b" }, "WORKER_NAME"},
		{"redis url", RoleServe, func(c *Config) { c.RedisURL = "http://x" }, "REDIS_URL"},
		{"token needs sub", RoleToken, func(c *Config) { c.TokenSub = "" }, "--sub is required"},
		{"token needs secret", RoleToken, func(c *Config) { c.JWTSecret = "" }, "JWT_SECRET is required"},
		{"migrate needs no secret", RoleMigrate, func(c *Config) { c.JWTSecret = "" }, ""},
		{"several at once", RoleServe, func(c *Config) { c.Partitions = 0; c.BatchSize = 0 }, "BATCH_SIZE"},

		// One way to verify tokens: JWT_SECRET, or an identity provider.
		{"JWKS instead of a secret", RoleAPI, func(c *Config) { c.NATSURL = "nats://n:4222"; identity(c) }, ""},
		{"OIDC instead of a secret", RoleServe, func(c *Config) {
			identity(c)
			c.JWTJWKSURL, c.JWTIssuer = "", ""
			c.OIDCIssuerURL = "https://idp.example"
		}, ""},
		{"no way at all", RoleServe, func(c *Config) { c.JWTSecret = "" }, "or JWT_JWKS_URL or OIDC_ISSUER_URL"},
		{"secret and JWKS", RoleServe, func(c *Config) { identity(c); c.JWTSecret = testSecret }, "JWT_SECRET and JWT_JWKS_URL are set: set one way"},
		{"JWKS and OIDC", RoleServe, func(c *Config) { identity(c); c.OIDCIssuerURL = "https://idp.example" }, "JWT_JWKS_URL and OIDC_ISSUER_URL are set"},
		{"JWKS needs an audience", RoleServe, func(c *Config) { identity(c); c.JWTAudience = "" }, "JWT_AUDIENCE is required with JWT_JWKS_URL"},
		{"JWKS needs an issuer", RoleServe, func(c *Config) { identity(c); c.JWTIssuer = "" }, "JWT_ISSUER is required with JWT_JWKS_URL"},
		{"OIDC needs an audience", RoleServe, func(c *Config) { c.JWTSecret = ""; c.OIDCIssuerURL = "https://idp.example" }, "JWT_AUDIENCE is required with OIDC_ISSUER_URL"},
		{"JWKS over plain http", RoleServe, func(c *Config) { identity(c); c.JWTJWKSURL = "http://idp.example/jwks.json" }, "must be https"},
		{"JWKS over http to loopback", RoleServe, func(c *Config) { identity(c); c.JWTJWKSURL = "http://127.0.0.1:8081/jwks.json" }, ""},
		{"secret with issuer and audience", RoleServe, func(c *Config) { c.JWTIssuer, c.JWTAudience = "me", "orderd" }, ""},
		{"admin claim", RoleServe, func(c *Config) { c.JWTAdminClaim = "roles=admin,scope=orders:admin" }, ""},
		{"bad admin claim", RoleServe, func(c *Config) { c.JWTAdminClaim = "roles=" }, "JWT_ADMIN_CLAIM"},
		{"negative cache", RoleServe, func(c *Config) { c.JWTCacheSize = -1 }, "JWT_CACHE_SIZE"},
		{"no cache", RoleServe, func(c *Config) { c.JWTCacheSize = 0 }, ""},
		{"token ignores the provider", RoleToken, func(c *Config) { identity(c); c.JWTSecret = testSecret }, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base(t, tt.role)
			tt.change(c)
			err := c.Validate(tt.role)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want it to contain %q", err, tt.want)
			case err != nil && !errors.As(err, new(usageError)):
				t.Errorf("Validate = %T, want a usageError", err)
			}
		})
	}
}

// identity configures c for an identity provider's tokens instead of
// JWT_SECRET.
func identity(c *Config) {
	c.JWTSecret = ""
	c.JWTJWKSURL = "https://idp.example/.well-known/jwks.json"
	c.JWTIssuer = "https://idp.example/"
	c.JWTAudience = "orderd"
}

func TestMask(t *testing.T) {
	opt := func(env string) option {
		for _, o := range options {
			if o.env == env {
				return o
			}
		}
		t.Fatalf("no option %s", env)
		return option{}
	}
	tests := []struct {
		env, in, want string
	}{
		{"JWT_SECRET", "hunter2hunter2", "*****"},
		{"JWT_SECRET", "", ""},
		{"PAYMENT_WEBHOOK_SECRET", "whsec_abc", "*****"},
		{"DATABASE_URL", "postgres://orderd:pa55word@db:5432/orderd?sslmode=disable", "postgres://orderd:*****@db:5432/orderd?sslmode=disable"},
		{"DATABASE_URL", "postgres://orderd@db/orderd", "postgres://orderd@db/orderd"},
		{"DATABASE_URL", "postgres://db/orderd?user=u&password=pa55word&sslmode=require", "postgres://db/orderd?user=u&password=*****&sslmode=require"},
		{"DATABASE_URL", "host=db user=orderd password=pa55word dbname=orderd", "host=db user=orderd password=***** dbname=orderd"},
		{"DATABASE_URL", "host=db password='pa 55' dbname=orderd", "host=db password=***** dbname=orderd"},
		{"REDIS_URL", "redis://:pa55word@cache:6379/0", "redis://:*****@cache:6379/0"},
		{"REDIS_URL", "rediss://default:pa55word@cache:6380/1", "rediss://default:*****@cache:6380/1"},
		{"REDIS_URL", "redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"},
		{"NATS_URL", "nats://app:pa55word@n1:4222,nats://app:pa55word@n2:4222", "nats://app:*****@n1:4222,nats://app:*****@n2:4222"},
		{"NATS_URL", "nats://s3cr3ttoken@n1:4222", "nats://*****@n1:4222"},
		{"NATS_URL", "", ""},
		{"HTTP_ADDR", ":8080", ":8080"},
	}
	for _, tt := range tests {
		if got := mask(opt(tt.env), tt.in); got != tt.want {
			t.Errorf("mask(%s, %q) = %q, want %q", tt.env, tt.in, got, tt.want)
		}
	}
}

// The start-up log line carries the effective config with every secret
// masked.
func TestConfigLogLineMasksSecrets(t *testing.T) {
	clearEnv(t)
	t.Setenv("JWT_SECRET", "jwt-"+testSecret)
	t.Setenv("PAYMENT_WEBHOOK_SECRET", "whsec-topsecret")
	t.Setenv("DATABASE_URL", "postgres://u:dbpass-topsecret@db/orderd")
	t.Setenv("REDIS_URL", "redis://:redispass-topsecret@cache:6379/0")
	t.Setenv("NATS_URL", "nats://u:natspass-topsecret@n:4222")
	c, _, err := parseConfig(RoleServe, "", nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	newLogger(&buf, slog.LevelInfo).Info("orderd starting", "config", c.logValue(RoleServe))
	line := buf.String()
	if strings.Count(line, "\n") != 1 {
		t.Errorf("config log is %d lines, want 1", strings.Count(line, "\n"))
	}
	if strings.Contains(line, "topsecret") || strings.Contains(line, testSecret) {
		t.Errorf("config log leaks a secret: %s", line)
	}
	for _, o := range roleOptions(RoleServe) {
		if !strings.Contains(line, `"`+o.env+`":`) {
			t.Errorf("config log lacks %s: %s", o.env, line)
		}
	}
}

// `orderd CMD --help` lists every option CMD takes, each with its
// environment variable and default.
func TestHelpListsEveryOption(t *testing.T) {
	clearEnv(t)
	for _, cmd := range commands {
		t.Run(string(cmd.role), func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(context.Background(), []string{string(cmd.role), "--help"}, &out, &errOut); err != nil {
				t.Fatalf("--help: %v", err)
			}
			help := out.String()
			opts := roleOptions(cmd.role)
			if len(opts) == 0 {
				t.Fatal("no options")
			}
			for _, o := range opts {
				if !strings.Contains(help, "--"+o.flag+"\n") && !strings.Contains(help, "--"+o.flag+" value\n") {
					t.Errorf("help lacks --%s:\n%s", o.flag, help)
				}
				if o.env != "" && !strings.Contains(help, "env "+o.env+",") {
					t.Errorf("help lacks env %s", o.env)
				}
			}
			if !strings.Contains(help, "usage: orderd "+string(cmd.role)) {
				t.Errorf("help lacks the synopsis:\n%s", help)
			}
		})
	}
	// Every option belongs to at least one command, and every environment
	// variable the brief names is an option of serve.
	for _, o := range options {
		if len(o.roles) == 0 {
			t.Errorf("option --%s belongs to no command", o.flag)
		}
	}
	var serveEnv []string
	for _, o := range roleOptions(RoleServe) {
		serveEnv = append(serveEnv, o.env)
	}
	for _, env := range []string{"DATABASE_URL", "REDIS_URL", "REDIS_PREFIX", "NATS_URL", "NATS_EMBEDDED_ADDR",
		"NATS_STORE_DIR", "NATS_SYNC", "HTTP_ADDR", "JWT_SECRET", "PARTITIONS", "SHIPPING_FEE", "PAYMENT_HOLD",
		"PAYMENT_WEBHOOK_SECRET", "BATCH_SIZE", "PIN_TTL", "ACK_WAIT", "MAX_DELIVER", "PUBLISH_TIMEOUT",
		"SHUTDOWN_TIMEOUT", "LOG_LEVEL", "NO_MIGRATE", "STREAM_REPLICAS", "WORKER_NAME"} {
		if !strings.Contains(strings.Join(serveEnv, " ")+" ", env+" ") {
			t.Errorf("serve has no option for %s", env)
		}
	}
}

func TestRunCommandLine(t *testing.T) {
	clearEnv(t)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"help"}, &out, &errOut); err != nil || !strings.Contains(out.String(), "Commands:") {
		t.Errorf("help: err %v, out %q", err, out.String())
	}
	for _, args := range [][]string{{"bogus"}, {"migrate"}, {"migrate", "sideways"}, {"token"}, {"serve", "extra"}} {
		err := run(context.Background(), args, io.Discard, io.Discard)
		if !errors.As(err, new(usageError)) {
			t.Errorf("run %q = %v, want a usage error", args, err)
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"help", "token"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "--sub value") {
		t.Errorf("help token: err %v, out %q", err, out.String())
	}
	if err := run(context.Background(), []string{"--help"}, &out, io.Discard); err != nil {
		t.Errorf("--help: %v", err)
	}
}

func TestToken(t *testing.T) {
	clearEnv(t)
	t.Setenv("JWT_SECRET", testSecret)
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "--sub", "u1", "--admin", "--ttl", "1h"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	p, err := auth.NewVerifier([]byte(testSecret)).Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(auth.Principal{UserID: "u1", Admin: true}, p); diff != "" {
		t.Errorf("principal (-want +got):\n%s", diff)
	}
	if _, err := auth.NewVerifier([]byte("another-" + testSecret)).Verify(strings.TrimSpace(out.String())); err == nil {
		t.Error("a token verified with another secret")
	}
}

func TestProbe(t *testing.T) {
	clearEnv(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" {
			w.Write([]byte(`{"ready":true}`))
			return
		}
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	var out bytes.Buffer
	if err := run(context.Background(), []string{"probe", "--url", srv.URL + "/readyz"}, &out, io.Discard); err != nil {
		t.Errorf("probe of a ready server: %v", err)
	}
	if err := run(context.Background(), []string{"probe", "--url", srv.URL + "/down"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("probe of a 503 = %v, want an error naming 503", err)
	}
	if err := run(context.Background(), []string{"probe", "--url", "ftp://x"}, io.Discard, io.Discard); !errors.As(err, new(usageError)) {
		t.Errorf("probe of ftp:// = %v, want a usage error", err)
	}
}

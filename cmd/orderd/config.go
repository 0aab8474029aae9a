package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/services/ingress"
)

// MinSecretLen is the shortest JWT_SECRET accepted: HS256 wants a key of at
// least 256 bits (RFC 7518, section 3.2).
const MinSecretLen = 32

// MinWebhookSecretLen is the shortest PAYMENT_WEBHOOK_SECRET accepted
// outside development mode (SPEC 3, Auth): HMAC-SHA256 wants a key as long
// as its output.
const MinWebhookSecretLen = 32

// devSecrets are the secrets that ship in the repository for development
// (the Makefile's, which scripts/bench-lib.sh and cmd/chaos reuse): anyone
// can read them, so anyone could sign tokens or payments with them. Only
// development mode accepts them, and any other "dev-only-" secret.
var devSecrets = []string{
	"dev-only-secret-change-me-0123456789abcdef", // JWT_SECRET
	"dev-only-webhook-secret-change-me",          // PAYMENT_WEBHOOK_SECRET
}

// isDevSecret reports whether s is one of the repository's development
// secrets.
func isDevSecret(s string) bool {
	return slices.Contains(devSecrets, s) || strings.HasPrefix(s, "dev-only-")
}

// DefaultHTTPMaxConns is HTTP_MAX_CONNS's default: room for the default
// STREAMS_TOTAL and as many other connections (a benchmark's 12,000
// clients and its waiters fit), some 17 KB each when idle, within a
// file descriptor limit of 20,000 with room for NATS and the stores.
const DefaultHTTPMaxConns = 16384

// NATSSyncAlways is the NATS_SYNC value that fsyncs every JetStream write
// before it is acknowledged (SPEC 5.8, the default).
const NATSSyncAlways = "always"

// natsDefaultSyncInterval is the embedded server's own flush interval when
// SyncAlways is off; it is the only interval pkg/natsbus can set today.
const natsDefaultSyncInterval = 2 * time.Minute

// Config is everything orderd reads from its flags and environment. Each
// field has one option (a flag and an environment variable) in options.
type Config struct {
	DatabaseURL string
	DBMaxConns  int
	RedisURL    string
	RedisPrefix string

	NATSURL          string
	NATSEmbeddedAddr string
	NATSStoreDir     string
	NATSSync         string
	StreamReplicas   int

	HTTPAddr             string
	MetricsAddr          string
	JWTSecret            string
	PaymentWebhookSecret string
	Dev                  bool // ORDERD_DEV: accept the development secrets
	ShippingFee          int64
	PublishTimeout       time.Duration
	PublishBatch         bool

	// How bearer tokens are verified besides JWTSecret (authConfig).
	JWTJWKSURL    string
	OIDCIssuerURL string
	JWTIssuer     string
	JWTAudience   string
	JWTAdminClaim string
	JWTCacheSize  int

	CheckoutRate         float64
	CheckoutBurst        int
	CheckoutInflight     int
	MaxInflightCheckouts int

	WriteRate  float64
	WriteBurst int

	HTTPMaxConns   int
	StreamsPerUser int
	StreamsTotal   int

	Partitions         int
	PaymentHold        time.Duration
	BatchSize          int
	PinTTL             time.Duration
	AckWait            time.Duration
	MaxDeliver         int
	ReservationTimeout time.Duration
	WorkerName         string

	ShutdownTimeout time.Duration
	LogLevel        string
	NoMigrate       bool

	// token subcommand
	TokenSub   string
	TokenAdmin bool
	TokenTTL   time.Duration

	// probe subcommand
	ProbeURL     string
	ProbeTimeout time.Duration

	// Credentials and TLS of the NATS and Redis connections beyond their
	// URLs (NATS_CREDS, NATS_NKEY_SEED, NATS_TLS_*, REDIS_TLS_*): file
	// names, see natsOptions and redisOptions.
	NATSCreds, NATSNKeySeed, NATSTLSCA, NATSTLSCert, NATSTLSKey string
	RedisTLSCA, RedisTLSCert, RedisTLSKey                       string
}

// Role is what a subcommand runs; it selects the options it takes and what
// Validate requires.
type Role string

// The subcommands that take options.
const (
	RoleServe   Role = "serve"
	RoleAPI     Role = "api"
	RoleWorker  Role = "worker"
	RoleMigrate Role = "migrate"
	RoleToken   Role = "token"
	RoleProbe   Role = "probe"
)

// Groups of roles that share options.
var (
	allRoles     = []Role{RoleServe, RoleAPI, RoleWorker, RoleMigrate, RoleToken, RoleProbe}
	serviceRoles = []Role{RoleServe, RoleAPI, RoleWorker}
	dbRoles      = []Role{RoleServe, RoleAPI, RoleWorker, RoleMigrate}
	httpRoles    = []Role{RoleServe, RoleAPI}
	workerRoles  = []Role{RoleServe, RoleWorker}
	// natsClientRoles connect to a NATS server: its credentials and TLS.
	natsClientRoles = []Role{RoleServe, RoleAPI, RoleWorker, RoleReconcile}
)

// option binds one Config field to a flag and an environment variable.
type option struct {
	flag   string // without dashes
	env    string // "" for subcommand-only flags (token --sub)
	def    string // built-in default, as text
	usage  string
	secret bool // masked in logs
	roles  []Role
	bind   func(c *Config) flag.Value
}

// options lists every option of every subcommand, in the order --help shows
// them.
var options = []option{
	{flag: "database-url", env: "DATABASE_URL", def: "postgres://orderd:orderd@127.0.0.1:5432/orderd?sslmode=disable",
		usage: "PostgreSQL URL (or key=value DSN); its password is masked in logs", roles: dbRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.DatabaseURL) }},
	{flag: "db-max-conns", env: "DB_MAX_CONNS", def: "20",
		usage: "most PostgreSQL connections this process opens", roles: []Role{RoleServe, RoleAPI, RoleWorker},
		bind: func(c *Config) flag.Value { return (*intValue)(&c.DBMaxConns) }},
	{flag: "redis-url", env: "REDIS_URL", def: "redis://127.0.0.1:6379/0",
		usage: "Redis URL (carts, order status cache); its password is masked in logs", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.RedisURL) }},
	{flag: "redis-prefix", env: "REDIS_PREFIX", def: "",
		usage: "prefix of every Redis key, to share one Redis between deployments", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.RedisPrefix) }},
	{flag: "redis-tls-ca", env: "REDIS_TLS_CA", def: "",
		usage: "CA certificate (PEM file) that signed the Redis server's, for a rediss:// REDIS_URL (empty: the system's CAs)", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.RedisTLSCA) }},
	{flag: "redis-tls-cert", env: "REDIS_TLS_CERT", def: "",
		usage: "client certificate (PEM file) for a rediss:// REDIS_URL whose server verifies clients; with REDIS_TLS_KEY", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.RedisTLSCert) }},
	{flag: "redis-tls-key", env: "REDIS_TLS_KEY", def: "",
		usage: "the key (PEM file) of REDIS_TLS_CERT", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.RedisTLSKey) }},
	{flag: "nats-url", env: "NATS_URL", def: "",
		usage: "NATS server URL(s), comma-separated; empty: serve starts an embedded NATS server (required for api and worker)", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.NATSURL) }},
	{flag: "nats-creds", env: "NATS_CREDS", def: "",
		usage: "NATS credentials file (a user JWT and its nkey seed, for a server in operator mode); instead of a user in NATS_URL", roles: natsClientRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.NATSCreds) }},
	{flag: "nats-nkey-seed", env: "NATS_NKEY_SEED", def: "",
		usage: "file holding the NATS user's nkey seed (the server's config lists its public key); instead of a user in NATS_URL", roles: natsClientRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.NATSNKeySeed) }},
	{flag: "nats-tls-ca", env: "NATS_TLS_CA", def: "",
		usage: "CA certificate (PEM file) that signed the NATS server's; set, the connection requires TLS (as tls:// in NATS_URL does, with the system's CAs)", roles: natsClientRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.NATSTLSCA) }},
	{flag: "nats-tls-cert", env: "NATS_TLS_CERT", def: "",
		usage: "client certificate (PEM file) for a NATS server that verifies clients; with NATS_TLS_KEY", roles: natsClientRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.NATSTLSCert) }},
	{flag: "nats-tls-key", env: "NATS_TLS_KEY", def: "",
		usage: "the key (PEM file) of NATS_TLS_CERT", roles: natsClientRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.NATSTLSKey) }},
	{flag: "nats-embedded-addr", env: "NATS_EMBEDDED_ADDR", def: "127.0.0.1:4222",
		usage: "host:port of the embedded NATS server (port 0 picks a free one; the address is logged)", roles: []Role{RoleServe},
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.NATSEmbeddedAddr) }},
	{flag: "nats-store-dir", env: "NATS_STORE_DIR", def: "./data/nats",
		usage: "JetStream file store of the embedded NATS server", roles: []Role{RoleServe},
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.NATSStoreDir) }},
	{flag: "nats-sync", env: "NATS_SYNC", def: NATSSyncAlways,
		usage: `embedded JetStream fsync policy: "always" fsyncs every write before the PubAck (a 202 survives a power loss); "2m" flushes every 2 minutes (faster, a power loss can lose accepted orders)`, roles: []Role{RoleServe},
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.NATSSync) }},
	{flag: "stream-replicas", env: "STREAM_REPLICAS", def: "1",
		usage: "replicas of the JetStream streams: 1 on one server, 3 or 5 on a cluster", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.StreamReplicas) }},

	{flag: "http-addr", env: "HTTP_ADDR", def: ":8080",
		usage: "HTTP listen address", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.HTTPAddr) }},
	{flag: "metrics-addr", env: "METRICS_ADDR", def: ":9090",
		usage: "listen address of a worker process's /metrics, /healthz and /readyz (empty: none); serve and api expose them on HTTP_ADDR", roles: []Role{RoleWorker},
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.MetricsAddr) }},
	{flag: "jwt-secret", env: "JWT_SECRET", def: "", secret: true,
		usage: fmt.Sprintf("HS256 secret of the bearer tokens (at least %d bytes); required unless JWT_JWKS_URL or OIDC_ISSUER_URL is set, and refused with either", MinSecretLen), roles: []Role{RoleServe, RoleAPI, RoleToken},
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.JWTSecret) }},
	{flag: "jwt-jwks-url", env: "JWT_JWKS_URL", def: "",
		usage: "your identity provider's JWK Set: verify its RS256, ES256 and EdDSA tokens (not HS256 ones) with its keys, refreshed every 5m and on an unknown kid; https (plain http only to a loopback address); needs JWT_ISSUER and JWT_AUDIENCE", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.JWTJWKSURL) }},
	{flag: "oidc-issuer-url", env: "OIDC_ISSUER_URL", def: "",
		usage: "your OpenID Connect issuer: like JWT_JWKS_URL, with the JWK Set named by <issuer>/.well-known/openid-configuration, whose issuer must equal this URL exactly; needs JWT_AUDIENCE", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.OIDCIssuerURL) }},
	{flag: "jwt-issuer", env: "JWT_ISSUER", def: "",
		usage: "the iss every token must carry (default OIDC_ISSUER_URL; required with JWT_JWKS_URL); with JWT_SECRET, checked when set, and written by orderd token", roles: []Role{RoleServe, RoleAPI, RoleToken},
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.JWTIssuer) }},
	{flag: "jwt-audience", env: "JWT_AUDIENCE", def: "",
		usage: "an aud every token must include (required with JWT_JWKS_URL or OIDC_ISSUER_URL); with JWT_SECRET, checked when set, and written by orderd token", roles: []Role{RoleServe, RoleAPI, RoleToken},
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.JWTAudience) }},
	{flag: "jwt-admin-claim", env: "JWT_ADMIN_CLAIM", def: auth.DefaultAdminClaim,
		usage: "which claims make a token an admin's: comma-separated rules, any one enough; name: the claim is true (admin); name=value: the claim is a string with value among its space-separated words (scope=orders:admin) or an array containing value (roles=admin); a dotted name reaches into nested objects (realm_access.roles=admin)", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.JWTAdminClaim) }},
	{flag: "jwt-cache-size", env: "JWT_CACHE_SIZE", def: strconv.Itoa(auth.DefaultCacheSize),
		usage: "verified tokens remembered until they expire (an LRU, about 250 bytes each); 0: none", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.JWTCacheSize) }},
	{flag: "payment-webhook-secret", env: "PAYMENT_WEBHOOK_SECRET", def: "", secret: true,
		usage: "HMAC-SHA256 secret of the payment provider's webhook signatures (empty: POST /v1/payments/webhook answers 503)", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.PaymentWebhookSecret) }},
	{flag: "dev", env: "ORDERD_DEV", def: "false",
		usage: fmt.Sprintf("development mode (make run sets it): accept the development secrets that ship in the repository and a PAYMENT_WEBHOOK_SECRET shorter than %d bytes; never in production", MinWebhookSecretLen), roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*boolValue)(&c.Dev) }},
	{flag: "shipping-fee", env: "SHIPPING_FEE", def: "1000",
		usage: "flat shipping fee in minor units (cents)", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*int64Value)(&c.ShippingFee) }},
	{flag: "publish-timeout", env: "PUBLISH_TIMEOUT", def: "3s",
		usage: "how long a checkout waits for JetStream's ack before answering 503", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*durationValue)(&c.PublishTimeout) }},
	{flag: "publish-batch", env: "PUBLISH_BATCH", def: "true",
		usage: "group commit: under load, pack concurrent checkouts of one partition into one JetStream message, one fsync for many orders (false: one message per checkout)", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*boolValue)(&c.PublishBatch) }},
	{flag: "checkout-rate", env: "CHECKOUT_RATE", def: "5",
		usage: "checkouts per second per user (token bucket; beyond it 429 with Retry-After); 0: no limit", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*float64Value)(&c.CheckoutRate) }},
	{flag: "checkout-burst", env: "CHECKOUT_BURST", def: "10",
		usage: "checkouts a user may send at once before CHECKOUT_RATE applies (the token bucket's size)", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.CheckoutBurst) }},
	{flag: "checkout-inflight", env: "CHECKOUT_INFLIGHT", def: "2",
		usage: "checkouts in flight per user (beyond them 429 with Retry-After); 0: no limit", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.CheckoutInflight) }},
	{flag: "max-inflight-checkouts", env: "MAX_INFLIGHT_CHECKOUTS", def: "4096",
		usage: "checkouts in flight in this process, of all users (beyond them 503 with Retry-After, at once); 0: no limit", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.MaxInflightCheckouts) }},
	{flag: "write-rate", env: "WRITE_RATE", def: strconv.Itoa(ingress.DefaultWriteRate),
		usage: "requests per second per user to every other write route and the preview, one token bucket for all (beyond it 429 with Retry-After); 0: no limit", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*float64Value)(&c.WriteRate) }},
	{flag: "write-burst", env: "WRITE_BURST", def: strconv.Itoa(ingress.DefaultWriteBurst),
		usage: "the size of WRITE_RATE's bucket: writes a user may send at once", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.WriteBurst) }},
	{flag: "http-max-conns", env: "HTTP_MAX_CONNS", def: strconv.Itoa(DefaultHTTPMaxConns),
		usage: "HTTP connections this process holds at once (beyond them new ones wait in the kernel's queue); keep it below the file descriptor limit; 0: no limit", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.HTTPMaxConns) }},
	{flag: "streams-per-user", env: "STREAMS_PER_USER", def: strconv.Itoa(ingress.DefaultStreamsPerUser),
		usage: "event streams and long-polls (?wait=) a user holds open in this process (beyond them 429 with Retry-After); 0: no limit", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.StreamsPerUser) }},
	{flag: "streams-total", env: "STREAMS_TOTAL", def: strconv.Itoa(ingress.DefaultStreamsTotal),
		usage: "event streams and long-polls open in this process, of all users (beyond them 429 with Retry-After); below HTTP_MAX_CONNS; 0: no limit", roles: httpRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.StreamsTotal) }},

	{flag: "partitions", env: "PARTITIONS", def: "16",
		usage: "number of stock partitions; every process of a deployment must use the same number", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.Partitions) }},
	{flag: "payment-hold", env: "PAYMENT_HOLD", def: "15m",
		usage: "how long a confirmed order holds its stock awaiting payment, unless its SKUs set their own", roles: workerRoles,
		bind: func(c *Config) flag.Value { return (*durationValue)(&c.PaymentHold) }},
	{flag: "batch-size", env: "BATCH_SIZE", def: "500",
		usage: "most commands a partition applies in one database transaction", roles: workerRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.BatchSize) }},
	{flag: "pin-ttl", env: "PIN_TTL", def: "5s",
		usage: "how long a partition stays pinned to a silent worker before another takes it over", roles: workerRoles,
		bind: func(c *Config) flag.Value { return (*durationValue)(&c.PinTTL) }},
	{flag: "ack-wait", env: "ACK_WAIT", def: "10s",
		usage: "how long JetStream waits for a command's ack before redelivering it", roles: workerRoles,
		bind: func(c *Config) flag.Value { return (*durationValue)(&c.AckWait) }},
	{flag: "max-deliver", env: "MAX_DELIVER", def: "10",
		usage: "deliveries of a command before it becomes a dead letter", roles: workerRoles,
		bind: func(c *Config) flag.Value { return (*intValue)(&c.MaxDeliver) }},
	{flag: "reservation-timeout", env: "RESERVATION_TIMEOUT", def: "10s",
		usage: "how long a multi-partition order waits for its reservations before it is rejected and released", roles: workerRoles,
		bind: func(c *Config) flag.Value { return (*durationValue)(&c.ReservationTimeout) }},
	{flag: "worker-name", env: "WORKER_NAME", def: "", // hostname-pid, filled in by newConfig
		usage: "this worker's name in JetStream (default hostname-pid)", roles: workerRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.WorkerName) }},

	{flag: "shutdown-timeout", env: "SHUTDOWN_TIMEOUT", def: "20s",
		usage: "how long a graceful shutdown waits for in-flight HTTP requests", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*durationValue)(&c.ShutdownTimeout) }},
	{flag: "no-migrate", env: "NO_MIGRATE", def: "false",
		usage: "do not apply the database migrations at start (run `orderd migrate up` instead)", roles: serviceRoles,
		bind: func(c *Config) flag.Value { return (*boolValue)(&c.NoMigrate) }},
	{flag: "log-level", env: "LOG_LEVEL", def: "info",
		usage: "debug, info, warn or error (JSON logs on stderr)", roles: allRoles,
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.LogLevel) }},

	{flag: "sub", def: "",
		usage: "the token's subject: the user id (required)", roles: []Role{RoleToken},
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.TokenSub) }},
	{flag: "admin", def: "false",
		usage: "mint an admin token", roles: []Role{RoleToken},
		bind: func(c *Config) flag.Value { return (*boolValue)(&c.TokenAdmin) }},
	{flag: "ttl", def: "24h",
		usage: "how long the token is valid", roles: []Role{RoleToken},
		bind: func(c *Config) flag.Value { return (*durationValue)(&c.TokenTTL) }},

	{flag: "url", def: "http://127.0.0.1:8080/readyz",
		usage: "the URL to GET", roles: []Role{RoleProbe},
		bind: func(c *Config) flag.Value { return (*stringValue)(&c.ProbeURL) }},
	{flag: "timeout", def: "3s",
		usage: "how long to wait for the answer", roles: []Role{RoleProbe},
		bind: func(c *Config) flag.Value { return (*durationValue)(&c.ProbeTimeout) }},
}

// roleOptions returns the options role takes.
func roleOptions(role Role) []option {
	var out []option
	for _, o := range options {
		if slices.Contains(o.roles, role) {
			out = append(out, o)
		}
	}
	return out
}

// defaultWorkerName is hostname-pid.
func defaultWorkerName() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "orderd"
	}
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}

// parseConfig reads role's options: the built-in default, overridden by the
// environment variable, overridden by the flag. It returns the remaining
// arguments. With -h or --help it prints the usage to stdout and returns
// flag.ErrHelp.
func parseConfig(role Role, synopsis string, args []string, stdout io.Writer) (*Config, []string, error) {
	c := &Config{}
	fs := flag.NewFlagSet("orderd "+string(role), flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are returned; usage is printed below
	opts := roleOptions(role)
	for _, o := range opts {
		v := o.bind(c)
		if err := v.Set(o.def); err != nil {
			panic(fmt.Sprintf("orderd: default of --%s: %v", o.flag, err))
		}
		if o.env != "" {
			if s, ok := os.LookupEnv(o.env); ok {
				if err := v.Set(s); err != nil {
					return nil, nil, fmt.Errorf("environment variable %s=%q: %w", o.env, mask(o, s), err)
				}
			}
		}
		fs.Var(v, o.flag, o.usage)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, role, synopsis, opts)
			return nil, nil, flag.ErrHelp
		}
		return nil, nil, usageError{fmt.Errorf("%w (see orderd %s --help)", err, role)}
	}
	if slices.Contains(workerRoles, role) && c.WorkerName == "" {
		c.WorkerName = defaultWorkerName()
	}
	return c, fs.Args(), nil
}

// printUsage writes role's synopsis and every option it takes with its
// environment variable and default.
func printUsage(w io.Writer, role Role, synopsis string, opts []option) {
	fmt.Fprintf(w, "%s\n\nOptions (a flag overrides its environment variable, which overrides the default):\n", synopsis)
	for _, o := range opts {
		name := "--" + o.flag
		if _, ok := o.bind(&Config{}).(*boolValue); !ok {
			name += " value"
		}
		def := strconv.Quote(o.def)
		switch {
		case o.flag == "worker-name":
			def = "hostname-pid"
		case o.secret:
			def = "none"
		}
		env := "no environment variable"
		if o.env != "" {
			env = "env " + o.env
		}
		fmt.Fprintf(w, "\n  %s\n      %s\n      (%s, default %s)\n", name, o.usage, env, def)
	}
}

// usageError is a mistake in the command line: main exits with 2.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// Validate checks the options role uses and returns every problem at once.
func (c *Config) Validate(role Role) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	uses := func(flag string) bool {
		for _, o := range roleOptions(role) {
			if o.flag == flag {
				return true
			}
		}
		return false
	}

	if uses("database-url") && strings.TrimSpace(c.DatabaseURL) == "" {
		bad("DATABASE_URL is required")
	}
	if uses("db-max-conns") && c.DBMaxConns < 1 {
		bad("DB_MAX_CONNS must be at least 1, not %d", c.DBMaxConns)
	}
	if uses("redis-url") {
		if u, err := url.Parse(c.RedisURL); err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			bad("REDIS_URL must be a redis://, rediss:// or unix:// URL")
		}
	}
	if uses("nats-url") {
		switch {
		case c.NATSURL == "" && role != RoleServe:
			bad("NATS_URL is required for %s: its processes share one NATS server (only serve starts an embedded one)", role)
		case c.NATSURL != "":
			for _, s := range strings.Split(c.NATSURL, ",") {
				if u, err := url.Parse(strings.TrimSpace(s)); err != nil || u.Host == "" {
					bad("NATS_URL %q is not a URL such as nats://host:4222", maskURL(s, true))
				}
			}
		}
	}
	if uses("nats-embedded-addr") && c.NATSURL == "" {
		if _, port, err := net.SplitHostPort(c.NATSEmbeddedAddr); err != nil {
			bad("NATS_EMBEDDED_ADDR %q is not host:port", c.NATSEmbeddedAddr)
		} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
			bad("NATS_EMBEDDED_ADDR port %q is not a port number", port)
		}
		if c.NATSStoreDir == "" {
			bad("NATS_STORE_DIR is required for the embedded NATS server")
		}
		if _, err := c.syncAlways(); err != nil {
			errs = append(errs, err)
		}
	}
	if uses("stream-replicas") && (c.StreamReplicas < 1 || c.StreamReplicas > 5) {
		bad("STREAM_REPLICAS must be 1 to 5, not %d", c.StreamReplicas)
	}
	if uses("http-addr") {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			bad("HTTP_ADDR %q is not [host]:port", c.HTTPAddr)
		}
	}
	if uses("metrics-addr") && c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("METRICS_ADDR %q is not [host]:port", c.MetricsAddr)
		}
	}
	if uses("jwt-secret") {
		errs = append(errs, c.validateTokens(uses)...)
	}
	if uses("dev") && !c.Dev {
		errs = append(errs, c.productionSecretErrors()...)
	}
	errs = append(errs, c.transportErrors(uses("nats-tls-ca"), uses("redis-tls-ca"))...)
	if uses("shipping-fee") && c.ShippingFee < 0 {
		bad("SHIPPING_FEE must not be negative")
	}
	if uses("publish-timeout") && c.PublishTimeout <= 0 {
		bad("PUBLISH_TIMEOUT must be positive")
	}
	if uses("checkout-rate") && (c.CheckoutRate < 0 || math.IsNaN(c.CheckoutRate) || math.IsInf(c.CheckoutRate, 0)) {
		bad("CHECKOUT_RATE must be a number of checkouts per second, 0 or more")
	}
	if uses("checkout-burst") && c.CheckoutRate > 0 && c.CheckoutBurst < 1 {
		bad("CHECKOUT_BURST must be at least 1, not %d", c.CheckoutBurst)
	}
	if uses("checkout-inflight") && c.CheckoutInflight < 0 {
		bad("CHECKOUT_INFLIGHT must not be negative")
	}
	if uses("max-inflight-checkouts") && c.MaxInflightCheckouts < 0 {
		bad("MAX_INFLIGHT_CHECKOUTS must not be negative")
	}
	if uses("write-rate") && (c.WriteRate < 0 || math.IsNaN(c.WriteRate) || math.IsInf(c.WriteRate, 0)) {
		bad("WRITE_RATE must be a number of requests per second, 0 or more")
	}
	if uses("write-burst") && c.WriteRate > 0 && c.WriteBurst < 1 {
		bad("WRITE_BURST must be at least 1, not %d", c.WriteBurst)
	}
	if uses("http-max-conns") && (c.HTTPMaxConns < 0 || c.StreamsPerUser < 0 || c.StreamsTotal < 0) {
		bad("HTTP_MAX_CONNS, STREAMS_PER_USER and STREAMS_TOTAL must not be negative")
	}
	if uses("streams-total") && c.HTTPMaxConns > 0 && (c.StreamsTotal == 0 || c.StreamsTotal >= c.HTTPMaxConns) {
		bad("STREAMS_TOTAL (%d) must be set below HTTP_MAX_CONNS (%d): streams must leave connections for checkouts", c.StreamsTotal, c.HTTPMaxConns)
	}
	if uses("partitions") && (c.Partitions < 1 || c.Partitions > 1024) {
		bad("PARTITIONS must be 1 to 1024, not %d", c.Partitions)
	}
	if uses("payment-hold") && c.PaymentHold < time.Second {
		bad("PAYMENT_HOLD must be at least 1s, not %s", c.PaymentHold)
	}
	if uses("batch-size") && (c.BatchSize < 1 || c.BatchSize > 10000) {
		bad("BATCH_SIZE must be 1 to 10000, not %d", c.BatchSize)
	}
	if uses("pin-ttl") && c.PinTTL < time.Second {
		bad("PIN_TTL must be at least 1s, not %s", c.PinTTL)
	}
	if uses("ack-wait") && c.AckWait < time.Second {
		bad("ACK_WAIT must be at least 1s, not %s", c.AckWait)
	}
	if uses("max-deliver") && c.MaxDeliver < 1 {
		bad("MAX_DELIVER must be at least 1, not %d", c.MaxDeliver)
	}
	if uses("reservation-timeout") && c.ReservationTimeout <= 0 {
		bad("RESERVATION_TIMEOUT must be positive")
	}
	if uses("worker-name") && !validName.MatchString(c.WorkerName) {
		bad("WORKER_NAME %q must be 1 to 64 letters, digits, '-', '_' or '.'", c.WorkerName)
	}
	if uses("shutdown-timeout") && c.ShutdownTimeout <= 0 {
		bad("SHUTDOWN_TIMEOUT must be positive")
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if role == RoleToken {
		if c.TokenSub == "" {
			bad("--sub is required")
		}
		if c.TokenTTL <= 0 {
			bad("--ttl must be positive")
		}
	}
	if role == RoleProbe {
		if u, err := url.Parse(c.ProbeURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("--url must be an http:// or https:// URL")
		}
		if c.ProbeTimeout <= 0 {
			bad("--timeout must be positive")
		}
	}
	if len(errs) > 0 {
		return usageError{fmt.Errorf("invalid configuration: %w", errors.Join(errs...))}
	}
	return nil
}

// productionSecretErrors refuses, outside development mode, the
// repository's development secrets and a PAYMENT_WEBHOOK_SECRET shorter
// than MinWebhookSecretLen. An empty webhook secret is no weak secret: the
// webhook is off (503).
func (c *Config) productionSecretErrors() []error {
	const way = "set a secret of your own (openssl rand -hex 32), or ORDERD_DEV=true (--dev) to develop"
	var errs []error
	if isDevSecret(c.JWTSecret) {
		errs = append(errs, fmt.Errorf("JWT_SECRET is a development secret from the repository, which anyone can sign tokens with: refused outside development mode; %s", way))
	}
	switch {
	case isDevSecret(c.PaymentWebhookSecret):
		errs = append(errs, fmt.Errorf("PAYMENT_WEBHOOK_SECRET is a development secret from the repository, which anyone can sign payments with: refused outside development mode; %s", way))
	case c.PaymentWebhookSecret != "" && len(c.PaymentWebhookSecret) < MinWebhookSecretLen:
		errs = append(errs, fmt.Errorf("PAYMENT_WEBHOOK_SECRET must be at least %d bytes outside development mode, not %d; %s", MinWebhookSecretLen, len(c.PaymentWebhookSecret), way))
	}
	return errs
}

// transportErrors checks the NATS (checkNATS) and Redis (checkRedis)
// credential and TLS options: the files exist, come in pairs and fit the
// URLs.
func (c *Config) transportErrors(checkNATS, checkRedis bool) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	files := map[string]string{}
	if checkNATS {
		files["NATS_CREDS"], files["NATS_NKEY_SEED"] = c.NATSCreds, c.NATSNKeySeed
		files["NATS_TLS_CA"], files["NATS_TLS_CERT"], files["NATS_TLS_KEY"] = c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey
		urlUser := false
		for _, s := range strings.Split(c.NATSURL, ",") {
			if u, err := url.Parse(strings.TrimSpace(s)); err == nil && u.User != nil {
				urlUser = true
			}
		}
		switch {
		case c.NATSURL == "" && c.NATSCreds+c.NATSNKeySeed+c.NATSTLSCA+c.NATSTLSCert+c.NATSTLSKey != "":
			bad("NATS_CREDS, NATS_NKEY_SEED and NATS_TLS_* need NATS_URL: the embedded NATS server of serve takes no credentials")
		case c.NATSCreds != "" && c.NATSNKeySeed != "":
			bad("NATS_CREDS and NATS_NKEY_SEED are two identities: give one")
		case urlUser && c.NATSCreds+c.NATSNKeySeed != "":
			bad("NATS_URL carries a user, and NATS_CREDS or NATS_NKEY_SEED another identity: give one")
		}
		if (c.NATSTLSCert == "") != (c.NATSTLSKey == "") {
			bad("NATS_TLS_CERT and NATS_TLS_KEY go together")
		}
	}
	if checkRedis {
		files["REDIS_TLS_CA"], files["REDIS_TLS_CERT"], files["REDIS_TLS_KEY"] = c.RedisTLSCA, c.RedisTLSCert, c.RedisTLSKey
		if c.RedisTLSCA+c.RedisTLSCert+c.RedisTLSKey != "" && !strings.HasPrefix(c.RedisURL, "rediss://") {
			bad("REDIS_TLS_CA, REDIS_TLS_CERT and REDIS_TLS_KEY need a rediss:// REDIS_URL")
		}
		if (c.RedisTLSCert == "") != (c.RedisTLSKey == "") {
			bad("REDIS_TLS_CERT and REDIS_TLS_KEY go together")
		}
	}
	for _, env := range slices.Sorted(maps.Keys(files)) {
		if f := files[env]; f != "" {
			if _, err := os.Stat(f); err != nil {
				bad("%s: %v", env, err)
			}
		}
	}
	return errs
}

// natsOptions returns the NATS connection's credentials and TLS options.
func (c *Config) natsOptions() ([]nats.Option, error) {
	return natsbus.Security{
		CredsFile: c.NATSCreds, NKeySeedFile: c.NATSNKeySeed,
		TLSCAFile: c.NATSTLSCA, TLSCertFile: c.NATSTLSCert, TLSKeyFile: c.NATSTLSKey,
	}.Options()
}

// redisOptions returns the Redis connection's TLS options.
func (c *Config) redisOptions() []redisstore.Option {
	if c.RedisTLSCA+c.RedisTLSCert+c.RedisTLSKey == "" {
		return nil
	}
	return []redisstore.Option{redisstore.WithTLSFiles(c.RedisTLSCA, c.RedisTLSCert, c.RedisTLSKey)}
}

var validName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// syncAlways reports whether NATS_SYNC asks for an fsync on every write.
func (c *Config) syncAlways() (bool, error) {
	if c.NATSSync == NATSSyncAlways {
		return true, nil
	}
	d, err := time.ParseDuration(c.NATSSync)
	if err != nil {
		return false, fmt.Errorf(`NATS_SYNC must be "always" or %q, not %q`, natsDefaultSyncInterval, c.NATSSync)
	}
	// pkg/natsbus.EmbeddedConfig can switch SyncAlways off but cannot set
	// the interval, so the server's own default is the only honest value.
	if d != natsDefaultSyncInterval {
		return false, fmt.Errorf(`NATS_SYNC must be "always" or %q (the embedded server cannot be given another interval), not %q`, natsDefaultSyncInterval, c.NATSSync)
	}
	return false, nil
}

// validateTokens checks the options of how bearer tokens are verified:
// exactly one way, HS256 with JWT_SECRET or the identity provider's keys.
func (c *Config) validateTokens(uses func(flag string) bool) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	var ways []string
	for _, w := range []struct{ flag, env, value string }{
		{"jwt-secret", "JWT_SECRET", c.JWTSecret},
		{"jwt-jwks-url", "JWT_JWKS_URL", c.JWTJWKSURL},
		{"oidc-issuer-url", "OIDC_ISSUER_URL", c.OIDCIssuerURL},
	} {
		if uses(w.flag) && w.value != "" {
			ways = append(ways, w.env)
		}
	}
	switch {
	case len(ways) == 0 && uses("jwt-jwks-url"):
		bad("JWT_SECRET is required (`make run` sets a development one), or JWT_JWKS_URL or OIDC_ISSUER_URL to verify your identity provider's tokens")
	case len(ways) == 0:
		bad("JWT_SECRET is required (`make run` sets a development one)")
	case len(ways) > 1:
		bad("%s are set: set one way to verify tokens, JWT_SECRET (HS256) or JWT_JWKS_URL or OIDC_ISSUER_URL", strings.Join(ways, " and "))
	case ways[0] == "JWT_SECRET":
		if len(c.JWTSecret) < MinSecretLen {
			bad("JWT_SECRET must be at least %d bytes, not %d", MinSecretLen, len(c.JWTSecret))
		}
	default:
		keyURL := c.JWTJWKSURL
		if ways[0] == "OIDC_ISSUER_URL" {
			keyURL = c.OIDCIssuerURL
		}
		if err := auth.CheckKeyURL(keyURL); err != nil {
			bad("%s: %w", ways[0], err)
		}
		if c.JWTAudience == "" {
			bad("JWT_AUDIENCE is required with %s: your identity provider signs tokens for other services too", ways[0])
		}
		if ways[0] == "JWT_JWKS_URL" && c.JWTIssuer == "" {
			bad("JWT_ISSUER is required with JWT_JWKS_URL: the iss of your identity provider's tokens")
		}
	}
	if uses("jwt-admin-claim") {
		if _, err := auth.ParseAdminClaim(c.JWTAdminClaim); err != nil {
			bad("JWT_ADMIN_CLAIM: %w", err)
		}
	}
	if uses("jwt-cache-size") && c.JWTCacheSize < 0 {
		bad("JWT_CACHE_SIZE must not be negative")
	}
	return errs
}

// authConfig is the bearer tokens' verifier's configuration.
func (c *Config) authConfig(log *slog.Logger) auth.Config {
	size := c.JWTCacheSize
	if size == 0 {
		size = -1 // JWT_CACHE_SIZE=0: no cache
	}
	return auth.Config{
		Secret:        []byte(c.JWTSecret),
		JWKSURL:       c.JWTJWKSURL,
		OIDCIssuerURL: c.OIDCIssuerURL,
		Issuer:        c.JWTIssuer,
		Audience:      c.JWTAudience,
		AdminClaim:    c.JWTAdminClaim,
		CacheSize:     size,
		Log:           log,
	}
}

// parseLevel parses LOG_LEVEL.
func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("LOG_LEVEL must be debug, info, warn or error, not %q", s)
	}
	return l, nil
}

// logValue returns the options role uses, keyed by environment variable,
// with secrets and the passwords inside URLs masked, for the start-up log.
func (c *Config) logValue(role Role) slog.Value {
	var attrs []slog.Attr
	for _, o := range roleOptions(role) {
		key := o.env
		if key == "" {
			continue // token's own flags
		}
		attrs = append(attrs, slog.String(key, mask(o, o.bind(c).String())))
	}
	return slog.GroupValue(attrs...)
}

// mask hides what must not be logged: a secret option becomes "*****" (or
// stays empty, so the log shows it is unset); URLs lose their passwords.
func mask(o option, v string) string {
	switch {
	case o.secret:
		if v == "" {
			return ""
		}
		return redacted
	case o.env == "DATABASE_URL":
		return maskDSN(v)
	case o.env == "REDIS_URL":
		return maskURL(v, false)
	case o.env == "JWT_JWKS_URL" || o.env == "OIDC_ISSUER_URL":
		return maskURL(v, false)
	case o.env == "NATS_URL":
		parts := strings.Split(v, ",")
		for i, p := range parts {
			parts[i] = maskURL(strings.TrimSpace(p), true)
		}
		return strings.Join(parts, ",")
	}
	return v
}

const redacted = "*****"

var (
	dsnPassword   = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)
	queryPassword = regexp.MustCompile(`(?i)([?&]password=)[^&]*`)
)

// maskDSN masks the password of a PostgreSQL URL or key=value DSN.
func maskDSN(s string) string {
	if strings.Contains(s, "://") {
		return queryPassword.ReplaceAllString(maskURL(s, false), "${1}"+redacted)
	}
	return dsnPassword.ReplaceAllString(s, "${1}"+redacted)
}

// maskURL masks the password in a URL's user info. With userIsSecret (NATS,
// where nats://TOKEN@host carries a token as the user name) a lone user name
// is masked too. A string that is not a URL is masked whole if it has an
// '@', since it may hold credentials.
func maskURL(s string, userIsSecret bool) string {
	u, err := url.Parse(s)
	if err != nil {
		if strings.Contains(s, "@") {
			return redacted
		}
		return s
	}
	if u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), redacted)
	} else if userIsSecret {
		u.User = url.User(redacted)
	}
	return strings.Replace(u.String(), url.QueryEscape(redacted), redacted, 1)
}

// Flag values. Each Set parses its text; String prints it back.
type (
	stringValue   string
	intValue      int
	int64Value    int64
	boolValue     bool
	durationValue time.Duration
	float64Value  float64
)

func (v *stringValue) Set(s string) error { *v = stringValue(s); return nil }
func (v *stringValue) String() string     { return string(*v) }

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("not an integer: %q", s)
	}
	*v = intValue(n)
	return nil
}
func (v *intValue) String() string { return strconv.Itoa(int(*v)) }

func (v *int64Value) Set(s string) error {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		return fmt.Errorf("not an integer: %q", s)
	}
	*v = int64Value(n)
	return nil
}
func (v *int64Value) String() string { return strconv.FormatInt(int64(*v), 10) }

func (v *boolValue) Set(s string) error {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "yes", "on":
		*v = true
	case "", "0", "f", "false", "no", "off":
		*v = false
	default:
		return fmt.Errorf("not a boolean: %q", s)
	}
	return nil
}
func (v *boolValue) String() string   { return strconv.FormatBool(bool(*v)) }
func (v *boolValue) IsBoolFlag() bool { return true }

func (v *durationValue) Set(s string) error {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("not a duration such as 30s or 15m: %q", s)
	}
	*v = durationValue(d)
	return nil
}
func (v *durationValue) String() string { return time.Duration(*v).String() }

func (v *float64Value) Set(s string) error {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return fmt.Errorf("not a number: %q", s)
	}
	*v = float64Value(f)
	return nil
}
func (v *float64Value) String() string { return strconv.FormatFloat(float64(*v), 'g', -1, 64) }

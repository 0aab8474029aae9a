package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
	"github.com/flashsale/orderd/pkg/tlstest"
	"github.com/flashsale/orderd/services/ingress"
)

// The NATS users of deploy/nats.conf and the environment variables that
// hold their passwords (docker-compose.yml sets them).
const (
	natsAPIUser       = "orderd-api"
	natsAPIPassEnv    = "NATS_API_PASSWORD"
	natsWorkerUser    = "orderd-worker"
	natsWorkerPassEnv = "NATS_WORKER_PASSWORD"
)

func randomSecret(t *testing.T) string {
	t.Helper()
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// serverLog collects what a nats-server logs as errors and warnings:
// permission and authorization violations among them.
type serverLog struct {
	mu    sync.Mutex
	lines []string
}

func (l *serverLog) add(format string, v ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, fmt.Sprintf(format, v...))
}
func (l *serverLog) Noticef(string, ...any)         {}
func (l *serverLog) Debugf(string, ...any)          {}
func (l *serverLog) Tracef(string, ...any)          {}
func (l *serverLog) Warnf(format string, v ...any)  { l.add(format, v...) }
func (l *serverLog) Errorf(format string, v ...any) { l.add(format, v...) }
func (l *serverLog) Fatalf(format string, v ...any) { l.add(format, v...) }
func (l *serverLog) matching(word string) (out []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.lines {
		if strings.Contains(s, word) {
			out = append(out, s)
		}
	}
	return out
}

// roleNATS is a nats-server with deploy/nats.conf's users and permissions.
type roleNATS struct {
	addr       string // host:port
	apiPass    string
	workerPass string
	log        *serverLog
}

// startRoleNATS starts a nats-server configured by deploy/nats.conf (its
// users, their permissions, JetStream with sync_interval always) on a free
// loopback port and a store of the test's, with TLS by the test's CA that
// requires a client certificate.
func startRoleNATS(t *testing.T, tf tlstest.Files) *roleNATS {
	t.Helper()
	r := &roleNATS{apiPass: randomSecret(t), workerPass: randomSecret(t), log: &serverLog{}}
	t.Setenv(natsAPIPassEnv, r.apiPass)
	t.Setenv(natsWorkerPassEnv, r.workerPass)
	opts, err := server.ProcessConfigFile(filepath.Join(repoRoot, "deploy/nats.conf"))
	if err != nil {
		t.Fatalf("deploy/nats.conf: %v", err)
	}
	opts.ConfigFile = ""
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.StoreDir = t.TempDir()
	opts.TLSConfig = tf.ServerConfig(t, true)
	opts.TLS, opts.TLSVerify, opts.TLSTimeout = true, true, 5
	opts.NoSigs = true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatalf("nats-server: %v", err)
	}
	s.SetLoggerV2(r.log, false, false, false)
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	r.addr = s.Addr().String()
	return r
}

// connect connects as user with the test's CA and client certificate, and
// returns the connection and the asynchronous errors the server sends it
// (permission violations).
func (r *roleNATS) connect(t *testing.T, tf tlstest.Files, user, pass string) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 16)
	nc, err := nats.Connect("tls://"+r.addr,
		nats.UserInfo(user, pass), nats.RootCAs(tf.CA), nats.ClientCert(tf.ClientCert, tf.ClientKey),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// aclRedisUser creates a Redis ACL user on the shared Redis that may touch
// only the keys under a fresh prefix and no dangerous command, deleted when
// the test ends, and returns a URL with its name and password, and the
// prefix.
func aclRedisUser(t *testing.T) (string, string) {
	t.Helper()
	rs, prefix := redistest.New(t)
	name, pass := "orderd-test-"+randomSecret(t)[:12], randomSecret(t)
	ctx := context.Background()
	rules := []any{"ACL", "SETUSER", name, "reset", "on", ">" + pass, "~" + prefix + "*", "resetchannels", "+@all", "-@dangerous"}
	if err := rs.Client().Do(ctx, rules...).Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	t.Cleanup(func() { rs.Client().Do(context.Background(), "ACL", "DELUSER", name) })
	u := strings.Replace(redistest.URL(), "redis://", "redis://"+name+":"+pass+"@", 1)
	return u, prefix
}

// deploy/nats.conf's permissions, on a real nats-server: each role
// publishes only the subjects it owns. The ingress cannot publish an event,
// ack a command or purge a stream; a worker publishes events. A client
// without credentials, or that does not trust the server's CA, is refused.
func TestNATSRolePermissions(t *testing.T) {
	tf := tlstest.New(t)
	ns := startRoleNATS(t, tf)
	apiNC, apiErrs := ns.connect(t, tf, natsAPIUser, ns.apiPass)
	workerNC, _ := ns.connect(t, tf, natsWorkerUser, ns.workerPass)
	wjs, err := jetstream.New(workerNC)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := natsbus.EnsureStreams(ctx, wjs, natsbus.StreamConfig{Replicas: 1}); err != nil {
		t.Fatal(err)
	}
	events := func() uint64 {
		st, err := wjs.Stream(ctx, natsbus.EventStream)
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().State.Msgs
	}
	subject := order.EventSubject(order.EventConfirmed)
	for _, subj := range []string{subject, "$JS.ACK." + natsbus.CommandStream + ".part-0.1.1.1.1.1.1", "$JS.API.STREAM.PURGE." + natsbus.CommandStream} {
		if err := apiNC.Publish(subj, []byte(`{"forged":true}`)); err != nil {
			t.Fatal(err)
		}
		if err := apiNC.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-apiErrs:
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") || !strings.Contains(err.Error(), subj) {
				t.Errorf("api publishing on %s: %v, want a permissions violation", subj, err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("api published on %s without a permissions violation", subj)
		}
	}
	if n := events(); n != 0 {
		t.Errorf("ORDER_EVENTS holds %d messages after the ingress's forged event, want 0", n)
	}
	// A worker publishes events (the outbox relay).
	if _, err := wjs.Publish(ctx, subject, []byte(`{"relayed":true}`)); err != nil {
		t.Errorf("worker publishing an event: %v", err)
	}
	if n := events(); n != 1 {
		t.Errorf("ORDER_EVENTS holds %d messages after the worker's event, want 1", n)
	}

	// Without credentials, or without the CA, no connection.
	if nc, err := nats.Connect("tls://"+ns.addr, nats.RootCAs(tf.CA), nats.ClientCert(tf.ClientCert, tf.ClientKey)); err == nil {
		nc.Close()
		t.Error("connected without credentials")
	} else if !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Errorf("connect without credentials: %v, want an authorization violation", err)
	}
	if nc, err := nats.Connect("tls://"+natsAPIUser+":"+ns.apiPass+"@"+ns.addr, nats.ClientCert(tf.ClientCert, tf.ClientKey)); err == nil {
		nc.Close()
		t.Error("connected without trusting the CA")
	} else if !strings.Contains(err.Error(), "certificate") {
		t.Errorf("connect without the CA: %v, want a certificate error", err)
	}
}

// The deployment's credentials, end to end: orderd api and orderd worker
// connect to a nats-server configured by deploy/nats.conf as their own
// users, over TLS with client certificates of a CA made by the test
// (NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY), and to Redis as an ACL user
// restricted to the deployment's key prefix (its password in REDIS_URL). A
// sale's every kind of traffic then flows without a permission violation.
func TestRolesWithCredentialsAndTLS(t *testing.T) {
	tf := tlstest.New(t)
	ns := startRoleNATS(t, tf)
	dsn, _ := pgtest.New(t)
	redisURL, prefix := aclRedisUser(t)
	hook := "whsec-" + testSecret
	common := []string{"--database-url", dsn, "--no-migrate", "--redis-url", redisURL, "--redis-prefix", prefix,
		"--partitions", "4", "--shutdown-timeout", "5s",
		"--nats-tls-ca", tf.CA, "--nats-tls-cert", tf.ClientCert, "--nats-tls-key", tf.ClientKey}
	api := startOrderd(t, append([]string{"api",
		"--nats-url", "nats://" + natsAPIUser + ":" + ns.apiPass + "@" + ns.addr,
		"--http-addr", "127.0.0.1:0", "--payment-webhook-secret", hook}, common...)...)
	worker := startOrderdUntil(t, "metrics listening", append([]string{"worker",
		"--nats-url", "tls://" + natsWorkerUser + ":" + ns.workerPass + "@" + ns.addr,
		"--metrics-addr", "127.0.0.1:0", "--worker-name", "w1", "--pin-ttl", "2s", "--ack-wait", "3s"}, common...)...)
	worker.logs.waitFor(t, "orderd ready", worker.done)

	// The poison message comes from the ingress's user, which may publish
	// commands.
	apiNC, _ := ns.connect(t, tf, natsAPIUser, ns.apiPass)
	apiJS, err := jetstream.New(apiNC)
	if err != nil {
		t.Fatal(err)
	}
	saleThroughRoles(t, newHTTPClient(t, api.base, hook), apiJS)
	// Their shutdowns too (a worker unpins its partitions).
	for _, p := range []*proc{api, worker} {
		p.stop()
		if err := p.wait(t, 30*time.Second); err != nil {
			t.Errorf("orderd stopped with %v", err)
		}
	}

	if v := ns.log.matching("Violation"); len(v) > 0 {
		t.Errorf("nats-server saw violations during the sale:\n%s", strings.Join(v, "\n"))
	}
	for _, p := range []*proc{api, worker} {
		for _, l := range p.logs.lines(t) {
			if l["msg"] == "nats error" {
				t.Errorf("orderd logged %v", l)
			}
		}
	}
}

// httpClient calls one orderd's HTTP API as a test.
type httpClient struct {
	t     *testing.T
	base  string
	hook  string // PAYMENT_WEBHOOK_SECRET
	admin string // tokens
	user  string
}

func newHTTPClient(t *testing.T, base, hook string) *httpClient {
	admin, _ := auth.Mint([]byte(testSecret), "admin", true, time.Hour)
	user, _ := auth.Mint([]byte(testSecret), "buyer-roles", false, time.Hour)
	return &httpClient{t: t, base: base, hook: hook, admin: admin, user: user}
}

// call sends a request with token (none if empty) and body, and decodes
// the answer, which must have one of the statuses want.
func (c *httpClient) call(method, path, token, body string, want ...int) map[string]any {
	t := c.t
	t.Helper()
	req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	if strings.HasSuffix(path, "/payments/webhook") {
		req.Header.Set(ingress.SignatureHeader, ingress.Sign([]byte(c.hook), time.Now(), []byte(body)))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if !slices.Contains(want, resp.StatusCode) {
		t.Fatalf("%s %s = %d %s, want %v", method, path, resp.StatusCode, raw, want)
	}
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %v: %s", method, path, err, raw)
		}
	}
	return out
}

// until calls GET path as the admin until ok accepts the answer, for up to
// a minute.
func (c *httpClient) until(path string, ok func(map[string]any) bool) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := c.call("GET", path, c.admin, "", 200)
		if ok(got) {
			return got
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("GET %s: still %v after a minute", path, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// await long-polls the buyer's order until it has status.
func (c *httpClient) await(id, status string) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		got := c.call("GET", "/v1/orders/"+id+"?wait=5s", c.user, "", 200)
		if got["status"] == status {
			return got
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("order %s is %v, want %s", id, got["status"], status)
		}
	}
}

// saleThroughRoles runs a sale's every kind of traffic through the ingress
// at base and its workers: checkouts on one partition and on two, a
// payment, a cancel, a restock, a poison command message (dead-lettered,
// then replayed) published by cmds, and reconciliation.
func saleThroughRoles(t *testing.T, c *httpClient, cmds jetstream.JetStream) {
	t.Helper()
	newSKU := func(name string) string {
		return c.call("POST", "/v1/skus", c.admin, `{"name":"`+name+`","price":1000,"currency":"EUR","stock":5}`, 201)["id"].(string)
	}
	// Two SKUs on different partitions, for an order across both.
	a, b := newSKU("a"), newSKU("b")
	for i := 0; order.Partition(uuid.MustParse(b), 4) == order.Partition(uuid.MustParse(a), 4); i++ {
		b = newSKU(fmt.Sprint("b", i))
	}
	addr := c.call("POST", "/v1/addresses", c.user, `{"recipient":"Ada","line1":"1 Main St","city":"Berlin","postal_code":"10115","country":"DE"}`, 201)["id"].(string)
	checkout := func(skus ...string) string {
		var lines []string
		for _, s := range skus {
			lines = append(lines, `{"sku_id":"`+s+`","quantity":1}`)
		}
		return c.call("POST", "/v1/orders", c.user, `{"address_id":"`+addr+`","payment_method":"card","items":[`+strings.Join(lines, ",")+`]}`, 202)["order_id"].(string)
	}

	paid := checkout(a)
	o := c.await(paid, "confirmed")
	c.call("POST", "/v1/payments/webhook", "", fmt.Sprintf(`{"order_id":%q,"amount":%v,"currency":"EUR","provider_ref":"pi_roles"}`, paid, o["grand_total"]), 200)
	c.await(paid, "paid")

	both := checkout(a, b)
	c.await(both, "confirmed")
	c.call("POST", "/v1/orders/"+both+"/cancel", c.user, "", 200, 202)
	c.await(both, "cancelled")

	c.call("POST", "/v1/skus/"+b+"/restock", c.admin, `{"quantity":3}`, 202)
	c.until("/v1/skus/"+b, func(s map[string]any) bool { return s["stock"] == float64(8) })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cmds.Publish(ctx, order.Subject(1), []byte("poison"), jetstream.WithMsgID("poison-roles")); err != nil {
		t.Fatalf("publish a poison command message: %v", err)
	}
	dl := c.until("/v1/admin/dead-letters", func(p map[string]any) bool { return len(p["items"].([]any)) > 0 })
	id := dl["items"].([]any)[0].(map[string]any)["id"]
	c.call("POST", fmt.Sprintf("/v1/admin/dead-letters/%v/replay", id), c.admin, "", 200, 202)
	c.until("/v1/admin/dead-letters", func(p map[string]any) bool { return len(p["items"].([]any)) > 1 })

	c.until("/v1/admin/reconcile", func(r map[string]any) bool { return r["ok"] == true })
	c.call("PATCH", "/v1/skus/"+a, c.admin, `{"name":"a, renamed"}`, 200)
	c.until("/readyz", func(r map[string]any) bool { return r["ready"] == true })
	c.operatorPageShowsWorker("w1")
}

// operatorPageShowsWorker reads the operator page's stream until a
// partition is shown held by the worker named name: the ingress read the
// partitions' consumers and heard the worker's pin notes.
func (c *httpClient) operatorPageShowsWorker(name string) {
	t := c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", c.base+"/v1/admin/stream?interval=250ms", nil)
	req.Header.Set("Authorization", "Bearer "+c.admin)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var snap struct {
			Partitions []struct {
				Worker string `json:"worker"`
			} `json:"partitions"`
		}
		if err := json.Unmarshal([]byte(data), &snap); err != nil {
			t.Fatalf("admin stream: %v: %s", err, data)
		}
		for _, p := range snap.Partitions {
			if p.Worker == name {
				return
			}
		}
	}
	t.Fatalf("the operator page never showed a partition held by %s (%v)", name, sc.Err())
}

// The credential and TLS options are checked at start, with messages that
// name them: files that exist, in pairs, one identity, URLs that fit.
func TestValidateTransportOptions(t *testing.T) {
	tf := tlstest.New(t)
	missing := filepath.Join(t.TempDir(), "missing.pem")
	tests := []struct {
		name   string
		role   Role
		change func(c *Config)
		want   string // "" for valid
	}{
		{"nats tls", RoleWorker, func(c *Config) {
			c.NATSTLSCA, c.NATSTLSCert, c.NATSTLSKey = tf.CA, tf.ClientCert, tf.ClientKey
		}, ""},
		{"nats creds", RoleAPI, func(c *Config) { c.NATSCreds = tf.CA }, ""},
		{"nats nkey seed", RoleReconcile, func(c *Config) { c.NATSNKeySeed = tf.CA }, ""},
		{"missing CA file", RoleWorker, func(c *Config) { c.NATSTLSCA = missing }, "NATS_TLS_CA: stat " + missing},
		{"cert without key", RoleAPI, func(c *Config) { c.NATSTLSCert = tf.ClientCert }, "NATS_TLS_CERT and NATS_TLS_KEY go together"},
		{"two identities", RoleWorker, func(c *Config) { c.NATSCreds, c.NATSNKeySeed = tf.CA, tf.CA }, "NATS_CREDS and NATS_NKEY_SEED are two identities"},
		{"url user and creds", RoleWorker, func(c *Config) { c.NATSURL = "nats://u:p@n:4222"; c.NATSCreds = tf.CA }, "NATS_URL carries a user"},
		{"embedded with credentials", RoleServe, func(c *Config) { c.NATSURL = ""; c.NATSTLSCA = tf.CA }, "need NATS_URL"},
		{"redis tls", RoleServe, func(c *Config) {
			c.RedisURL = "rediss://:pw@cache:6380/0"
			c.RedisTLSCA, c.RedisTLSCert, c.RedisTLSKey = tf.CA, tf.ClientCert, tf.ClientKey
		}, ""},
		{"redis tls without rediss", RoleWorker, func(c *Config) { c.RedisTLSCA = tf.CA }, "need a rediss:// REDIS_URL"},
		{"redis key without cert", RoleWorker, func(c *Config) { c.RedisURL = "rediss://cache:6380"; c.RedisTLSKey = tf.ClientKey }, "REDIS_TLS_CERT and REDIS_TLS_KEY go together"},
		{"redis missing CA", RoleAPI, func(c *Config) { c.RedisURL = "rediss://cache:6380"; c.RedisTLSCA = missing }, "REDIS_TLS_CA: stat"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clearEnv(t)
			c, _, err := parseConfig(tt.role, "", nil, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			c.JWTSecret, c.NATSURL = testSecret, "nats://n:4222"
			tt.change(c)
			err = c.Validate(tt.role)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("Validate = %v, want nil", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("Validate = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

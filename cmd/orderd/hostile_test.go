package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// TestServeResistsSlowClientsAndKeepsSecrets runs the real `orderd serve`
// and checks two things an attacker probes: a client that sends its header
// a byte at a time (slowloris) is cut off after readHeaderTimeout instead
// of holding its connection forever; and neither the JWT secret nor a
// rejected token appears in the log, from the start-up config line to the
// failed authentications.
func TestServeResistsSlowClientsAndKeepsSecrets(t *testing.T) {
	dsn, _ := pgtest.New(t)
	_, prefix := redistest.New(t)
	p := startOrderd(t, "serve",
		"--database-url", dsn, "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--http-addr", "127.0.0.1:0", "--nats-embedded-addr", "127.0.0.1:0", "--nats-store-dir", t.TempDir(),
		"--partitions", "2", "--shutdown-timeout", "5s", "--log-level", "debug")
	p.logs.waitFor(t, "orderd ready", p.done)

	t.Run("slowloris", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: orderd\r\n"); err != nil {
			t.Fatal(err)
		}
		closed := make(chan time.Duration, 1)
		go func() {
			_, _ = io.Copy(io.Discard, conn) // until the server closes the connection
			closed <- time.Since(start)
		}()
		// One byte of a header that never ends, every 200ms.
		limit := readHeaderTimeout + 3*time.Second
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case took := <-closed:
				if took < readHeaderTimeout-time.Second {
					t.Errorf("cut off after %s, before the header timeout (%s): something else closed it", took, readHeaderTimeout)
				}
				return
			case <-tick.C:
				if time.Since(start) > limit {
					t.Fatalf("a client sending its header a byte at a time still holds its connection after %s (ReadHeaderTimeout %s)", limit, readHeaderTimeout)
				}
				// A write may fail once the server has closed: the reader
				// reports it.
				_, _ = conn.Write([]byte("X"))
			}
		}
	})

	t.Run("no secrets in the log", func(t *testing.T) {
		expired, err := auth.Mint([]byte(testSecret), "alice", false, -time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		forged, err := auth.Mint([]byte("attacker-secret-0123456789abcdef0123"), "admin", true, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for _, tok := range []string{expired, forged, "Bearer-looking-garbage-0123456789abcdef"} {
			for _, path := range []string{"/v1/cart", "/v1/orders", "/v1/skus"} {
				req, err := http.NewRequest("GET", p.base+path, nil)
				if err != nil {
					t.Fatal(err)
				}
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("GET %s with a bad token: %d, want 401", path, resp.StatusCode)
				}
			}
		}
		p.logs.mu.Lock()
		logs := p.logs.buf.String()
		p.logs.mu.Unlock()
		if !strings.Contains(logs, `"JWT_SECRET":`) {
			t.Errorf("no start-up config line with JWT_SECRET (masked) in the log")
		}
		if strings.Contains(logs, testSecret) {
			t.Errorf("the log holds the JWT secret:\n%s", logs)
		}
		for _, tok := range []string{expired, forged} {
			for _, part := range strings.Split(tok, ".") {
				if strings.Contains(logs, part) {
					t.Errorf("the log holds part of a rejected token (%q)", part)
				}
			}
		}
	})
}

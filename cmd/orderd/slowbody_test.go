package main

import (
	"bufio"
	"fmt"
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

// TestServeCutsSlowBodies: a client that sends its header at once and then
// its body a byte at a time (the other half of slowloris: the header
// timeout does not apply any more) is cut off once readTimeout has passed
// since the request began, with the handler answering a 400 problem (it
// was a 422 that showed the connection's addresses) rather than holding a
// goroutine, a connection and a checkout slot for ever; and nothing is
// stored.
func TestServeCutsSlowBodies(t *testing.T) {
	dsn, db := pgtest.New(t)
	_, prefix := redistest.New(t)
	p := startOrderd(t, "serve",
		"--database-url", dsn, "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--http-addr", "127.0.0.1:0", "--nats-embedded-addr", "127.0.0.1:0", "--nats-store-dir", t.TempDir(),
		"--partitions", "2", "--shutdown-timeout", "5s")
	p.logs.waitFor(t, "orderd ready", p.done)
	tok, err := auth.Mint([]byte(testSecret), "slow", false, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"recipient":"Slow","line1":"1 Road","city":"Paris","postal_code":"75001","country":"FR"}`
	start := time.Now()
	if _, err := fmt.Fprintf(conn, "POST /v1/addresses HTTP/1.1\r\nHost: orderd\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", tok, len(body)); err != nil {
		t.Fatal(err)
	}
	type answer struct {
		status int
		took   time.Duration
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			answered <- answer{0, time.Since(start)} // closed without an answer
			return
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(data), "127.0.0.1") {
			t.Errorf("the answer shows the connection's addresses: %s", data)
		}
		answered <- answer{resp.StatusCode, time.Since(start)}
	}()
	limit := readTimeout + 5*time.Second
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case a := <-answered:
			if a.took < readTimeout-time.Second {
				t.Errorf("answered %d after %s, before the read timeout (%s)", a.status, a.took, readTimeout)
			}
			if a.status != 0 && a.status != http.StatusBadRequest {
				t.Errorf("a body cut off by the read timeout answered %d, want 400 (or no answer)", a.status)
			}
			var n int
			if err := db.Get(&n, `SELECT count(*) FROM addresses`); err != nil {
				t.Fatal(err)
			}
			if n != 0 {
				t.Errorf("%d addresses stored from a body that never arrived", n)
			}
			t.Logf("cut off after %s (status %d)", a.took.Round(time.Millisecond), a.status)
			return
		case <-tick.C:
			if time.Since(start) > limit {
				t.Fatalf("a client sending its body a byte every 500ms still holds its request after %s (ReadTimeout %s)", limit, readTimeout)
			}
			if i < len(body)-1 { // never the last byte
				_, _ = conn.Write([]byte{body[i]})
			}
		}
	}
}

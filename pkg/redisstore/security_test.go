package redisstore_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/redisstore"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
	"github.com/flashsale/orderd/pkg/tlstest"
)

func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// withUser returns the test server's URL with user and password.
func withUser(t *testing.T, raw, user, pass string) string {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(user, pass)
	return u.String()
}

// A deployment's Redis user is an ACL user, its name and password in
// REDIS_URL, allowed only its REDIS_PREFIX's keys and no dangerous command.
// The store works as that user, and the server refuses it anything else.
func TestOpenAsRestrictedACLUser(t *testing.T) {
	admin, prefix := redistest.New(t)
	ctx := context.Background()
	name, pass := "orderd-test-"+randomHex(t, 6), randomHex(t, 16)
	if err := admin.Client().Do(ctx, "ACL", "SETUSER", name, "reset", "on", ">"+pass, "~"+prefix+"*", "resetchannels", "+@all", "-@dangerous").Err(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	t.Cleanup(func() { admin.Client().Do(context.Background(), "ACL", "DELUSER", name) })

	s, err := redisstore.Open(ctx, withUser(t, redistest.URL(), name, pass), prefix)
	if err != nil {
		t.Fatalf("open as %s: %v", name, err)
	}
	defer s.Close()
	sku := uuid.New()
	if err := s.SetCartItem(ctx, "u1", sku, 2); err != nil {
		t.Fatalf("set a cart item as the ACL user: %v", err)
	}
	cart, err := s.Cart(ctx, "u1")
	if err != nil || cart[sku] != 2 {
		t.Fatalf("cart = %v, %v; want %s: 2", cart, err, sku)
	}
	if who, err := s.Client().Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != name {
		t.Errorf("ACL WHOAMI = %q, %v; want %s", who, err, name)
	}
	// Outside its prefix, or a dangerous command: refused.
	if err := s.Client().Set(ctx, "other:"+prefix, "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("SET outside the prefix = %v, want NOPERM", err)
	}
	if err := s.Client().FlushDB(ctx).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
		t.Errorf("FLUSHDB = %v, want NOPERM", err)
	}
	// A wrong password does not open.
	if s2, err := redisstore.Open(ctx, withUser(t, redistest.URL(), name, "wrong-"+pass), prefix); err == nil {
		s2.Close()
		t.Error("opened with a wrong password")
	} else if !strings.Contains(err.Error(), "WRONGPASS") {
		t.Errorf("open with a wrong password = %v, want WRONGPASS", err)
	}
}

// tlsProxy terminates TLS (cfg) on a loopback port and forwards each
// connection to the test's Redis; it returns the proxy's host:port.
func tlsProxy(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	u, err := url.Parse(redistest.URL())
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r, err := net.Dial("tcp", u.Host)
				if err != nil {
					return
				}
				defer r.Close()
				go func() { io.Copy(r, c); r.Close() }()
				io.Copy(c, r)
			}()
		}
	}()
	return ln.Addr().String()
}

// REDIS_TLS_CA, REDIS_TLS_CERT, REDIS_TLS_KEY: a rediss:// server whose
// certificate a private CA signed, and that verifies clients (Redis's
// tls-auth-clients default), is reached with the CA and a client
// certificate; without the CA the certificate is refused, without the
// client certificate the server refuses.
func TestOpenRedissWithPrivateCA(t *testing.T) {
	tf := tlstest.New(t)
	addr := tlsProxy(t, tf.ServerConfig(t, true))
	_, prefix := redistest.New(t)
	ctx := context.Background()
	rediss := "rediss://" + addr + "/0"

	s, err := redisstore.Open(ctx, rediss, prefix, redisstore.WithTLSFiles(tf.CA, tf.ClientCert, tf.ClientKey))
	if err != nil {
		t.Fatalf("open %s with the CA and a client certificate: %v", rediss, err)
	}
	defer s.Close()
	if err := s.SetCartItem(ctx, "u1", uuid.New(), 1); err != nil {
		t.Errorf("set a cart item over TLS: %v", err)
	}

	if s2, err := redisstore.Open(ctx, rediss, prefix); err == nil {
		s2.Close()
		t.Error("opened without trusting the private CA")
	} else if !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Errorf("open without the CA = %v, want an unknown authority", err)
	}
	if s2, err := redisstore.Open(ctx, rediss, prefix, redisstore.WithTLSFiles(tf.CA, "", "")); err == nil {
		s2.Close()
		t.Error("opened without a client certificate")
	}
	if _, err := redisstore.Open(ctx, redistest.URL(), prefix, redisstore.WithTLSFiles(tf.CA, "", "")); err == nil || !strings.Contains(err.Error(), "rediss://") {
		t.Errorf("TLS files with a redis:// URL = %v, want an error naming rediss://", err)
	}
}

package main

import (
	"bytes"
	"context"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/auth"
)

// syncBuffer is a bytes.Buffer safe for one writer and one reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// What the example prints works: orderd's verifier, configured as the
// printed command says, accepts the buyer's token as a buyer's and the
// admin's as an admin's.
func TestExamplePrintsWorkingTokens(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			out := &syncBuffer{}
			done := make(chan error, 1)
			go func() { done <- run(ctx, ln, options{alg: alg, audience: "orderd", ttl: time.Hour}, out) }()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("run = %v", err)
				}
			}()

			printed := waitPrinted(t, out)
			find := func(re string) string {
				t.Helper()
				m := regexp.MustCompile(re).FindStringSubmatch(printed)
				if m == nil {
					t.Fatalf("no %s in:\n%s", re, printed)
				}
				return m[1]
			}
			v, err := auth.New(context.Background(), auth.Config{
				OIDCIssuerURL: find(`OIDC_ISSUER_URL=(\S+)`),
				Audience:      find(`JWT_AUDIENCE=(\S+)`),
				AdminClaim:    find(`JWT_ADMIN_CLAIM=(\S+)`),
			})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			for _, c := range []struct {
				env  string
				want auth.Principal
			}{
				{"BUYER_TOKEN", auth.Principal{UserID: "buyer-1"}},
				{"ADMIN_TOKEN", auth.Principal{UserID: "ops-1", Admin: true}},
			} {
				p, err := v.Verify(find(c.env + `=(\S+)`))
				if err != nil || p != c.want {
					t.Errorf("%s: %+v, %v; want %+v", c.env, p, err, c.want)
				}
			}
		})
	}
}

// waitPrinted waits until run has printed its instructions.
func waitPrinted(t *testing.T, out *syncBuffer) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !bytes.Contains([]byte(out.String()), []byte("Ctrl-C stops this provider")) {
		if time.Now().After(deadline) {
			t.Fatalf("nothing printed in 30 s: %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	return out.String()
}

// Command jwks stands in for a shop's identity provider, to try orderd's
// verification of a provider's tokens on one machine: it generates a key,
// serves its JWK Set (/jwks.json) and an OpenID Connect discovery document
// (/.well-known/openid-configuration), prints a buyer's and an admin's
// token signed with the key, and the commands to start orderd against it
// and call it.
//
//	go run ./examples/jwks [--addr 127.0.0.1:8081] [--alg RS256|ES256|EdDSA] [--audience orderd] [--ttl 1h]
//
// The admin's token carries roles: ["admin", "buyer"], the buyer's roles:
// ["buyer"]; orderd is told JWT_ADMIN_CLAIM=roles=admin. Ctrl-C stops it.
// It is not an identity provider to run a shop with (no users, no login,
// a key that lives as long as the process): see pkg/auth/authtest.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/flashsale/orderd/pkg/auth/authtest"
)

// options are the command's flags.
type options struct {
	addr, alg, audience string
	ttl                 time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.addr, "addr", "127.0.0.1:8081", "listen address (a loopback one: orderd fetches keys over plain http only from loopback)")
	flag.StringVar(&o.alg, "alg", "RS256", "the key's algorithm: RS256, ES256 or EdDSA")
	flag.StringVar(&o.audience, "audience", "orderd", "the tokens' aud, orderd's JWT_AUDIENCE")
	flag.DurationVar(&o.ttl, "ttl", time.Hour, "how long the printed tokens are valid")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ln, err := net.Listen("tcp", o.addr)
	if err == nil {
		err = run(ctx, ln, o, os.Stdout)
	}
	if err != nil {
		slog.Error("jwks", "err", err)
		os.Exit(1)
	}
}

// run serves a provider on ln until ctx ends, after printing to out its
// tokens and how to use them.
func run(ctx context.Context, ln net.Listener, o options, out io.Writer) error {
	key, err := authtest.NewKey(o.alg, "trial-"+time.Now().UTC().Format("20060102T150405"))
	if err != nil {
		return err
	}
	issuer := "http://" + ln.Addr().String()
	p := authtest.NewProvider(issuer, key)
	buyer, err := key.Sign(p.Claims("buyer-1", o.audience, o.ttl, map[string]any{"roles": []string{"buyer"}}))
	if err != nil {
		return err
	}
	admin, err := key.Sign(p.Claims("ops-1", o.audience, o.ttl, map[string]any{"roles": []string{"admin", "buyer"}}))
	if err != nil {
		return err
	}
	fmt.Fprintf(out, `identity provider %s: %s key %q, JWK Set at %s%s

Start orderd against it in another shell (JWT_SECRET= turns make run's development secret off):

  JWT_SECRET= OIDC_ISSUER_URL=%s JWT_AUDIENCE=%s JWT_ADMIN_CLAIM=roles=admin make run

Then, with these tokens (valid %s):

  BUYER_TOKEN=%s
  ADMIN_TOKEN=%s
  curl -s -H "Authorization: Bearer $BUYER_TOKEN" localhost:8080/v1/skus
  curl -s -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' -d '{"name":"Phone","price":19900,"currency":"EUR","stock":100}' localhost:8080/v1/skus
  curl -s -H "Authorization: Bearer $BUYER_TOKEN" -H 'Content-Type: application/json' -d '{"name":"Phone","price":1,"currency":"EUR","stock":1}' localhost:8080/v1/skus

The first answers 200, the second 201, the third 403 (a buyer on an admin route).
Ctrl-C stops this provider.
`, issuer, o.alg, key.ID, issuer, authtest.JWKSPath, issuer, o.audience, o.ttl, buyer, admin)

	srv := &http.Server{Handler: p, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

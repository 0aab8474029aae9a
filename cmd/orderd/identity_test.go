package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/auth/authtest"
	"github.com/flashsale/orderd/pkg/natsbus/natstest"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
	"github.com/flashsale/orderd/pkg/redisstore/redistest"
)

// callWithToken sends method path with a bearer token and a JSON body (if not
// empty) and returns the status.
func callWithToken(t *testing.T, method, url, token, body string) int {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// api verifies the tokens of the identity provider that OIDC_ISSUER_URL
// names, with JWT_ADMIN_CLAIM, and no longer HS256 ones.
func TestAPIWithIdentityProvider(t *testing.T) {
	k := authtest.MustKey(t, "ES256", "k1")
	idp := authtest.Start(t, k)
	dsn, _ := pgtest.New(t)
	_, prefix := redistest.New(t)
	ns := natstest.Start(t)
	p := startOrderd(t, "api", "--jwt-secret=",
		"--oidc-issuer-url", idp.Issuer(), "--jwt-audience", "orderd", "--jwt-admin-claim", "roles=admin",
		"--database-url", dsn, "--redis-url", redistest.URL(), "--redis-prefix", prefix,
		"--nats-url", ns.ClientURL(), "--http-addr", "127.0.0.1:0")
	token := func(sub string, extra map[string]any) string {
		s, err := k.Sign(idp.Claims(sub, "orderd", time.Hour, extra))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hs256, err := auth.Mint([]byte(testSecret), "admin", true, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sku := `{"name":"Phone","price":100,"currency":"EUR","stock":1}`
	for _, c := range []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"user token", "GET", "/v1/skus", token("alice", nil), "", http.StatusOK},
		{"user token on an admin route", "POST", "/v1/skus", token("alice", map[string]any{"roles": []string{"buyer"}}), sku, http.StatusForbidden},
		{"admin token", "POST", "/v1/skus", token("ops", map[string]any{"roles": []string{"admin"}}), sku, http.StatusCreated},
		{"HS256 token", "GET", "/v1/skus", hs256, "", http.StatusUnauthorized},
	} {
		if got := callWithToken(t, c.method, p.base+c.path, c.token, c.body); got != c.want {
			t.Errorf("%s: %s %s = %d, want %d", c.name, c.method, c.path, got, c.want)
		}
	}
}

// A configuration with two ways to verify tokens, or an identity provider
// that cannot be used, fails the start before anything is opened.
func TestStartRefusesAnIdentityProviderItCannotUse(t *testing.T) {
	idp := authtest.Start(t, authtest.MustKey(t, "RS256", "k1"))
	nowhere := []string{"--database-url", "postgres://nobody@127.0.0.1:1/nothing", "--nats-url", "nats://127.0.0.1:1"}

	clearEnv(t)
	t.Setenv("JWT_SECRET", testSecret)
	err := run(context.Background(), append([]string{"api", "--jwt-jwks-url", idp.JWKSURL(), "--jwt-issuer", idp.Issuer(), "--jwt-audience", "orderd"}, nowhere...), io.Discard, io.Discard)
	if !errors.As(err, new(usageError)) || !strings.Contains(err.Error(), "JWT_SECRET and JWT_JWKS_URL are set") {
		t.Errorf("run with JWT_SECRET and JWT_JWKS_URL = %v, want a usage error naming both", err)
	}

	idp.SetDiscoveryIssuer("https://impostor.example")
	logs := &logBuffer{}
	err = run(context.Background(), append([]string{"api", "--jwt-secret=", "--oidc-issuer-url", idp.Issuer(), "--jwt-audience", "orderd"}, nowhere...), io.Discard, logs)
	if err == nil || !strings.Contains(err.Error(), `names the issuer "https://impostor.example"`) {
		t.Errorf("run with a discovery document of another issuer = %v", err)
	}
	for _, l := range logs.lines(t) {
		if l["msg"] == "postgres connected" {
			t.Error("postgres was opened before the identity provider was checked")
		}
	}
}

// orderd token writes JWT_ISSUER and JWT_AUDIENCE, which an HS256 api with
// the same settings checks.
func TestTokenWithIssuerAndAudience(t *testing.T) {
	clearEnv(t)
	t.Setenv("JWT_SECRET", testSecret)
	t.Setenv("JWT_ISSUER", "https://shop.example")
	t.Setenv("JWT_AUDIENCE", "orderd")
	var out bytes.Buffer
	if err := run(context.Background(), []string{"token", "--sub", "u1"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(out.String())
	verify := func(iss, aud string) error {
		v, err := auth.New(context.Background(), auth.Config{Secret: []byte(testSecret), Issuer: iss, Audience: aud})
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(tok)
		return err
	}
	if err := verify("https://shop.example", "orderd"); err != nil {
		t.Errorf("same issuer and audience: %v", err)
	}
	if err := verify("https://shop.example", "another-api"); err == nil {
		t.Error("another audience accepted the token")
	}
	if err := verify("https://other.example", "orderd"); err == nil {
		t.Error("another issuer accepted the token")
	}
}

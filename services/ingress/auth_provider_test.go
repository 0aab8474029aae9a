package ingress

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/auth/authtest"
)

// providerAudience is the audience the tests' identity provider writes.
const providerAudience = "orderd-api"

// withVerifier makes the server verify tokens with auth.New(c).
func withVerifier(t testing.TB, c auth.Config) envOption {
	return func(_ *testEnv, _ *Config, d *Deps) {
		v, err := auth.New(context.Background(), c)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Close)
		d.Auth = v
	}
}

// providerConfig verifies p's tokens with adminClaim.
func providerConfig(p *authtest.Provider, adminClaim string) auth.Config {
	return auth.Config{JWKSURL: p.JWKSURL(), Issuer: p.Issuer(), Audience: providerAudience, AdminClaim: adminClaim}
}

// providerToken is k's token for sub with extra claims, valid for an hour.
func providerToken(t testing.TB, p *authtest.Provider, k *authtest.Key, sub string, extra map[string]any) string {
	t.Helper()
	s, err := k.Sign(p.Claims(sub, providerAudience, time.Hour, extra))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// With the shop's identity provider: its RS256, ES256 and EdDSA tokens are
// accepted; a token from another issuer or for another audience, expired or
// not yet valid, HS256 (even keyed with the provider's public key), or
// unsigned is 401, and changes nothing.
func TestAuthWithIdentityProvider(t *testing.T) {
	t.Parallel()
	keys := []*authtest.Key{
		authtest.MustKey(t, "RS256", "rsa-1"),
		authtest.MustKey(t, "ES256", "ec-1"),
		authtest.MustKey(t, "EdDSA", "ed-1"),
	}
	p := authtest.Start(t, keys...)
	e := newTestEnv(t, withVerifier(t, providerConfig(p, "")))
	for _, k := range keys {
		e.mustDo(t, "GET", "/v1/skus", providerToken(t, p, k, "alice-"+k.Alg, nil), nil, http.StatusOK, nil)
	}

	rsa := keys[0]
	claims := func(edit func(jwt.MapClaims)) jwt.MapClaims {
		c := p.Claims("mallory", providerAudience, time.Hour, map[string]any{"admin": true})
		edit(c)
		return c
	}
	sign := func(c jwt.MapClaims) string {
		s, err := rsa.Sign(c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	hs256 := func(key []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(func(jwt.MapClaims) {}))
		tok.Header["kid"] = rsa.ID
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	der, err := x509.MarshalPKIXPublicKey(rsa.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	unknownKey := authtest.MustKey(t, "RS256", "not-published")
	unsigned := jwt.NewWithClaims(jwt.SigningMethodNone, claims(func(jwt.MapClaims) {}))
	unsigned.Header["kid"] = rsa.ID
	none, err := unsigned.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string]string{
		"unknown issuer":         sign(claims(func(c jwt.MapClaims) { c["iss"] = "https://idp.evil.example" })),
		"wrong audience":         sign(claims(func(c jwt.MapClaims) { c["aud"] = "another-api" })),
		"no audience":            sign(claims(func(c jwt.MapClaims) { delete(c, "aud") })),
		"expired":                sign(claims(func(c jwt.MapClaims) { c["exp"] = now.Add(-time.Hour).Unix() })),
		"nbf in the future":      sign(claims(func(c jwt.MapClaims) { c["nbf"] = now.Add(time.Hour).Unix() })),
		"HS256 with the secret":  hs256(e.Secret),
		"HS256 with the key PEM": hs256(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})),
		"alg none":               none,
		"unknown kid":            providerToken(t, p, unknownKey, "mallory", map[string]any{"admin": true}),
	}
	before := e.snapshot(t)
	for name, tok := range bad {
		t.Run(name, func(t *testing.T) {
			for _, r := range []struct {
				method, path string
				body         any
			}{{"GET", "/v1/skus", nil}, {"POST", "/v1/skus", newSKU("Forged", 100, 1)}} {
				resp, body := e.do(t, r.method, r.path, tok, r.body)
				pr := wantProblem(t, resp, body, http.StatusUnauthorized)
				if pr.Type != "/problems/unauthorized" || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s %s: problem type %q, WWW-Authenticate %q", r.method, r.path, pr.Type, resp.Header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	e.assertUnchanged(t, before)
}

// JWT_ADMIN_CLAIM decides which tokens are admins'; a user's token on an
// admin route is 403, in either way of verifying.
func TestAuthAdminClaimVariants(t *testing.T) {
	t.Parallel()
	k := authtest.MustKey(t, "RS256", "k")
	p := authtest.Start(t, k)
	type tokenCase struct {
		claims map[string]any
		want   int
	}
	tests := []struct {
		rule   string
		tokens []tokenCase
	}{
		{"", []tokenCase{ // the default: admin: true or role: admin
			{map[string]any{"admin": true}, http.StatusCreated},
			{map[string]any{"role": "admin"}, http.StatusCreated},
			{map[string]any{"roles": []string{"admin"}}, http.StatusForbidden},
			{map[string]any{"admin": "true"}, http.StatusUnauthorized}, // malformed: refused
		}},
		{"admin", []tokenCase{
			{map[string]any{"admin": true}, http.StatusCreated},
			{map[string]any{"role": "admin"}, http.StatusForbidden},
			{map[string]any{"admin": false}, http.StatusForbidden},
		}},
		{"roles=admin", []tokenCase{
			{map[string]any{"roles": []string{"buyer", "admin"}}, http.StatusCreated},
			{map[string]any{"roles": "admin"}, http.StatusCreated},
			{map[string]any{"roles": []string{"buyer"}}, http.StatusForbidden},
			{map[string]any{"admin": true}, http.StatusForbidden},
		}},
		{"scope=orders:admin", []tokenCase{
			{map[string]any{"scope": "openid orders:admin"}, http.StatusCreated},
			{map[string]any{"scope": "openid orders:read"}, http.StatusForbidden},
			{map[string]any{"scope": "orders:admin:read"}, http.StatusForbidden},
		}},
		{"realm_access.roles=admin", []tokenCase{
			{map[string]any{"realm_access": map[string]any{"roles": []string{"admin"}}}, http.StatusCreated},
			{map[string]any{"realm_access": map[string]any{"roles": []string{"user"}}}, http.StatusForbidden},
		}},
	}
	for _, tt := range tests {
		t.Run("rule "+tt.rule, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, withVerifier(t, providerConfig(p, tt.rule)))
			for i, tc := range tt.tokens {
				tok := providerToken(t, p, k, "someone", tc.claims)
				resp, body := e.do(t, "POST", "/v1/skus", tok, newSKU("Phone "+string(rune('A'+i)), 100, 1))
				if resp.StatusCode != tc.want {
					t.Errorf("claims %v: %d, want %d; body %s", tc.claims, resp.StatusCode, tc.want, body)
				}
				if tc.want != http.StatusCreated {
					wantProblem(t, resp, body, tc.want)
				}
			}
		})
	}
	// The rule applies to HS256 tokens too.
	t.Run("HS256 with rule roles=admin", func(t *testing.T) {
		t.Parallel()
		e := newTestEnv(t, withVerifier(t, auth.Config{Secret: testSecret, AdminClaim: "roles=admin"}))
		resp, body := e.do(t, "POST", "/v1/skus", e.adminToken(t), newSKU("Phone", 100, 1)) // admin: true
		wantProblem(t, resp, body, http.StatusForbidden)
		c := jwt.MapClaims{"sub": "ops", "exp": time.Now().Add(time.Hour).Unix(), "roles": []string{"admin"}}
		e.mustDo(t, "POST", "/v1/skus", sign(t, jwt.SigningMethodHS256, e.Secret, c), newSKU("Phone", 100, 1), http.StatusCreated, nil)
	})
}

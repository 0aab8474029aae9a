package ingress

import (
	"encoding/base64"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashsale/orderd/pkg/auth"
)

// sign signs claims with method and key, failing the test on error.
func sign(t testing.TB, method jwt.SigningMethod, key any, claims jwt.Claims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// claims returns claims for sub valid from nbf to exp.
func claims(sub string, nbf, exp time.Time) auth.Claims {
	return auth.Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: sub, NotBefore: jwt.NewNumericDate(nbf), ExpiresAt: jwt.NewNumericDate(exp),
	}}
}

func TestAuthRefusesBadTokens(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	now := time.Now()
	valid := claims("alice", now.Add(-time.Minute), now.Add(time.Hour))
	noExp := auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"}}
	good := sign(t, jwt.SigningMethodHS256, e.Secret, valid)
	headers := map[string]string{
		"missing header":        "",
		"empty bearer":          "Bearer ",
		"other scheme":          "Basic " + good,
		"lower-case scheme":     "bearer " + good,
		"no scheme":             good,
		"garbage":               "Bearer not.a.token",
		"expired":               "Bearer " + sign(t, jwt.SigningMethodHS256, e.Secret, claims("alice", now.Add(-2*time.Hour), now.Add(-time.Hour))),
		"nbf in the future":     "Bearer " + sign(t, jwt.SigningMethodHS256, e.Secret, claims("alice", now.Add(time.Hour), now.Add(2*time.Hour))),
		"no exp":                "Bearer " + sign(t, jwt.SigningMethodHS256, e.Secret, noExp),
		"wrong signature":       "Bearer " + sign(t, jwt.SigningMethodHS256, []byte("another-secret-0123456789abcdef"), valid),
		"tampered payload":      "Bearer " + tamper(good),
		"alg none":              "Bearer " + sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid),
		"HS512 with the secret": "Bearer " + sign(t, jwt.SigningMethodHS512, e.Secret, valid),
		"HS384 with the secret": "Bearer " + sign(t, jwt.SigningMethodHS384, e.Secret, valid),
		"empty sub":             "Bearer " + sign(t, jwt.SigningMethodHS256, e.Secret, claims("", now.Add(-time.Minute), now.Add(time.Hour))),
		"sub too long":          "Bearer " + sign(t, jwt.SigningMethodHS256, e.Secret, claims(strings.Repeat("u", 129), now.Add(-time.Minute), now.Add(time.Hour))),
	}
	routes := []struct{ method, path string }{
		{"GET", "/v1/skus"},
		{"POST", "/v1/skus"},
		{"GET", "/v1/cart"},
		{"POST", "/v1/checkout/preview"},
		{"DELETE", "/v1/addresses/00000000-0000-0000-0000-000000000001"},
	}
	before := e.snapshot(t)
	for name, h := range headers {
		t.Run(name, func(t *testing.T) {
			for _, r := range routes {
				var hdr http.Header
				if h != "" {
					hdr = http.Header{"Authorization": {h}}
				}
				resp, body := e.doHeaders(t, r.method, r.path, "", `{}`, hdr)
				p := wantProblem(t, resp, body, http.StatusUnauthorized)
				if p.Type != "/problems/unauthorized" {
					t.Errorf("%s %s: problem type %q", r.method, r.path, p.Type)
				}
				if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s %s: WWW-Authenticate %q", r.method, r.path, resp.Header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	e.assertUnchanged(t, before)
	// The same claims, properly signed, pass.
	e.mustDo(t, "GET", "/v1/skus", good, nil, http.StatusOK, nil)
}

// tamper changes the subject in a token's payload, keeping its signature.
func tamper(token string) string {
	parts := strings.Split(token, ".")
	claims, _ := base64.RawURLEncoding.DecodeString(parts[1])
	parts[1] = base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(claims), `"alice"`, `"mallory"`, 1)))
	return strings.Join(parts, ".")
}

func TestAuthAdminRoutes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	before := e.snapshot(t)
	user := e.token(t, "alice")
	resp, body := e.do(t, "POST", "/v1/skus", user, newSKU("Phone", 100, 1))
	p := wantProblem(t, resp, body, http.StatusForbidden)
	if p.Type != "/problems/forbidden" {
		t.Errorf("problem type %q", p.Type)
	}
	// A user cannot make themself admin with role claims other than admin.
	roleUser := auth.Claims{RegisteredClaims: claims("eve", time.Now().Add(-time.Minute), time.Now().Add(time.Hour)).RegisteredClaims, Role: "superuser"}
	resp, body = e.do(t, "POST", "/v1/skus", sign(t, jwt.SigningMethodHS256, e.Secret, roleUser), newSKU("Phone", 100, 1))
	wantProblem(t, resp, body, http.StatusForbidden)
	e.assertUnchanged(t, before)

	// admin: true and role: admin are both admins.
	e.mustDo(t, "POST", "/v1/skus", e.adminToken(t), newSKU("Phone", 100, 1), http.StatusCreated, nil)
	roleAdmin := auth.Claims{RegisteredClaims: claims("ops", time.Now().Add(-time.Minute), time.Now().Add(time.Hour)).RegisteredClaims, Role: "admin"}
	e.mustDo(t, "POST", "/v1/skus", sign(t, jwt.SigningMethodHS256, e.Secret, roleAdmin), newSKU("Case", 100, 1), http.StatusCreated, nil)
}

func TestAuthPublicRoutes(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	for _, path := range []string{"/healthz", "/openapi.json", "/metrics"} {
		resp, body := e.do(t, "GET", path, "", nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a token: %d %s", path, resp.StatusCode, body)
		}
	}
}

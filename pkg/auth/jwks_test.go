package auth

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"

	"github.com/flashsale/orderd/pkg/auth/authtest"
	"github.com/flashsale/orderd/pkg/order"
)

// testAudience is the audience of the tests' provider tokens.
const testAudience = "orderd"

// providerVerifier returns a verifier of p's tokens; change, if not nil,
// edits its config first. Neither refresh happens by itself unless change
// shortens its interval.
func providerVerifier(t *testing.T, p *authtest.Provider, change func(*Config)) *Verifier {
	t.Helper()
	c := Config{
		JWKSURL:            p.JWKSURL(),
		Issuer:             p.Issuer(),
		Audience:           testAudience,
		RefreshInterval:    time.Hour,
		UnknownKIDInterval: time.Hour,
		Log:                slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	}
	if change != nil {
		change(&c)
	}
	v, err := New(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// signed returns claims signed by k.
func signed(t testing.TB, k *authtest.Key, claims jwt.Claims) string {
	t.Helper()
	s, err := k.Sign(claims)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// userToken is a valid token of p for sub, signed by k.
func userToken(t testing.TB, p *authtest.Provider, k *authtest.Key, sub string) string {
	t.Helper()
	return signed(t, k, p.Claims(sub, testAudience, time.Hour, nil))
}

// wantAccepted fails the test unless v verifies token as sub.
func wantAccepted(t *testing.T, v *Verifier, token, sub string) {
	t.Helper()
	p, err := v.Verify(token)
	if err != nil || p.UserID != sub {
		t.Fatalf("Verify = %+v, %v; want %s accepted", p, err, sub)
	}
}

// wantRefused fails the test unless v refuses token with a message that
// contains why, and did not remember it.
func wantRefused(t *testing.T, v *Verifier, token, why string) {
	t.Helper()
	_, err := v.Verify(token)
	if order.ErrorCode(err) != order.EUNAUTHORIZED || !strings.Contains(order.ErrorMessage(err), why) {
		t.Errorf("Verify = %v, want EUNAUTHORIZED saying %q", err, why)
	}
	if remembered(v, token) {
		t.Errorf("a refused token was remembered")
	}
}

func TestProviderTokensOfEachAlgorithm(t *testing.T) {
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		t.Run(alg, func(t *testing.T) {
			k := authtest.MustKey(t, alg, "k-"+alg)
			p := authtest.Start(t, k)
			v := providerVerifier(t, p, nil)
			tok := userToken(t, p, k, "alice")
			for range 2 { // parsed, then remembered
				wantAccepted(t, v, tok, "alice")
			}
			if !remembered(v, tok) {
				t.Error("a verified token was not remembered")
			}
			if p.JWKSFetches() != 1 {
				t.Errorf("%d fetches of the JWK Set, want 1 (at start)", p.JWKSFetches())
			}
		})
	}
	// A key published without alg is used for the algorithm its type fits.
	k := authtest.MustKey(t, "ES256", "no-alg")
	k.OmitAlg = true
	p := authtest.Start(t, k)
	wantAccepted(t, providerVerifier(t, p, nil), userToken(t, p, k, "bob"), "bob")
}

// The provider rotates its key: a token with the new kid is accepted after
// one fetch caused by the unknown kid; a token of the withdrawn key is
// refused, remembered or not; and a second unknown kid within
// UnknownKIDInterval causes no fetch.
func TestKeyRotation(t *testing.T) {
	a := authtest.MustKey(t, "RS256", "a")
	p := authtest.Start(t, a)
	v := providerVerifier(t, p, nil)
	tokA := userToken(t, p, a, "alice")
	wantAccepted(t, v, tokA, "alice")

	b := authtest.MustKey(t, "ES256", "b")
	p.SetKeys(b) // a withdrawn, b published
	wantAccepted(t, v, userToken(t, p, b, "bob"), "bob")
	if got := p.JWKSFetches(); got != 2 {
		t.Fatalf("%d fetches after the unknown kid b, want 2", got)
	}
	// tokA is remembered, but its key is gone: refused like a new token.
	wantRefused(t, v, tokA, "kid is not a key")

	c := authtest.MustKey(t, "EdDSA", "c")
	p.SetKeys(b, c)
	wantRefused(t, v, userToken(t, p, c, "carol"), "kid is not a key")
	if got := p.JWKSFetches(); got != 2 {
		t.Errorf("%d fetches after a second unknown kid within the rate limit, want still 2", got)
	}
	wantAccepted(t, v, userToken(t, p, b, "bob"), "bob")
}

// Requests that arrive together with a new kid share one fetch.
func TestUnknownKIDConcurrentRequestsShareOneFetch(t *testing.T) {
	a := authtest.MustKey(t, "RS256", "a")
	p := authtest.Start(t, a)
	v := providerVerifier(t, p, nil)
	b := authtest.MustKey(t, "RS256", "b")
	p.SetKeys(a, b)
	toks := make([]string, 16)
	for i := range toks {
		toks[i] = userToken(t, p, b, fmt.Sprintf("u%d", i))
	}
	var wg sync.WaitGroup
	errs := make([]error, len(toks))
	for i, tok := range toks {
		wg.Go(func() { _, errs[i] = v.Verify(tok) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("request %d: %v", i, err)
		}
	}
	if got := p.JWKSFetches(); got != 2 {
		t.Errorf("%d fetches, want 2 (start, then one for kid b)", got)
	}
}

// The JWK Set is fetched again in the background: a new key is accepted
// and a withdrawn one refused without any unknown-kid fetch.
func TestBackgroundRefresh(t *testing.T) {
	a := authtest.MustKey(t, "RS256", "a")
	p := authtest.Start(t, a)
	v := providerVerifier(t, p, func(c *Config) { c.RefreshInterval = 20 * time.Millisecond })
	tokA := userToken(t, p, a, "alice")
	wantAccepted(t, v, tokA, "alice")
	// Spend the one unknown-kid fetch the rate limit allows per hour.
	wantRefused(t, v, userToken(t, p, authtest.MustKey(t, "RS256", "made-up"), "mallory"), "kid is not a key")

	b := authtest.MustKey(t, "RS256", "b")
	p.SetKeys(b)
	from := p.JWKSFetches()
	deadline := time.Now().Add(30 * time.Second)
	for p.JWKSFetches() < from+2 { // a whole fetch after SetKeys
		if time.Now().After(deadline) {
			t.Fatalf("no background fetch in 30 s (%d fetches)", p.JWKSFetches())
		}
		time.Sleep(5 * time.Millisecond)
	}
	wantAccepted(t, v, userToken(t, p, b, "bob"), "bob")
	wantRefused(t, v, tokA, "kid is not a key")
}

func TestIssuerAndAudience(t *testing.T) {
	k := authtest.MustKey(t, "RS256", "k")
	p := authtest.Start(t, k)
	v := providerVerifier(t, p, nil)
	claims := func(edit func(jwt.MapClaims)) string {
		c := p.Claims("alice", testAudience, time.Hour, nil)
		edit(c)
		return signed(t, k, c)
	}
	wantRefused(t, v, claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" }), "issuer (iss)")
	wantRefused(t, v, claims(func(c jwt.MapClaims) { c["iss"] = p.Issuer() + "/" }), "issuer (iss)")
	wantRefused(t, v, claims(func(c jwt.MapClaims) { delete(c, "iss") }), "lacks a required claim")
	wantRefused(t, v, claims(func(c jwt.MapClaims) { c["aud"] = "another-api" }), "audience (aud)")
	wantRefused(t, v, claims(func(c jwt.MapClaims) { c["aud"] = []string{"another-api", "a third"} }), "audience (aud)")
	wantRefused(t, v, claims(func(c jwt.MapClaims) { delete(c, "aud") }), "lacks a required claim")
	wantAccepted(t, v, claims(func(c jwt.MapClaims) { c["aud"] = []string{"another-api", testAudience} }), "alice")
}

// exp and nbf are checked on a first use and on every later one.
func TestProviderTokenTimes(t *testing.T) {
	k := authtest.MustKey(t, "ES256", "k")
	p := authtest.Start(t, k)
	v := providerVerifier(t, p, nil)
	clock := time.Now()
	v.now = func() time.Time { return clock }
	at := func(sub string, nbf, exp time.Time) string {
		c := p.Claims(sub, testAudience, time.Hour, nil)
		c["nbf"], c["exp"] = nbf.Unix(), exp.Unix()
		return signed(t, k, c)
	}
	wantRefused(t, v, at("old", clock.Add(-2*time.Hour), clock.Add(-time.Hour)), "has expired")
	early := at("early", clock.Add(time.Hour), clock.Add(2*time.Hour))
	wantRefused(t, v, early, "not valid yet")
	noExp := p.Claims("forever", testAudience, time.Hour, nil)
	delete(noExp, "exp")
	wantRefused(t, v, signed(t, k, noExp), "lacks a required claim")

	tok := at("alice", clock.Add(-time.Second), clock.Add(time.Minute))
	wantAccepted(t, v, tok, "alice")
	clock = clock.Add(time.Minute + leeway)
	wantRefused(t, v, tok, "has expired") // remembered, and expired
	clock = clock.Add(time.Hour)
	wantAccepted(t, v, early, "early")
}

// An HS256 token is never checked against a key of the JWK Set, nor a
// provider's token against the secret; the key's own alg, use and type
// must fit the token's alg.
func TestAlgorithmConfusion(t *testing.T) {
	rsaKey := authtest.MustKey(t, "RS256", "rsa")
	p := authtest.Start(t, rsaKey)
	// The provider also publishes a symmetric key (it should not).
	secret := []byte("0123456789abcdef0123456789abcdef")
	oct, err := jwkset.NewJWKFromKey(secret, jwkset.JWKOptions{
		Marshal:  jwkset.JWKMarshalOptions{Private: true},
		Metadata: jwkset.JWKMetadataOptions{KID: "oct", ALG: jwkset.AlgHS256},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.AddRawJWK(oct.Marshal())
	v := providerVerifier(t, p, nil)
	claims := p.Claims("mallory", testAudience, time.Hour, map[string]any{"admin": true})

	hs256 := func(kid string, key []byte) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	der, err := x509.MarshalPKIXPublicKey(rsaKey.Signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwkJSON, err := json.Marshal(oct.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	rsaPub := rsaKey.Signer.Public().(*rsa.PublicKey)
	for name, tok := range map[string]string{
		"HS256 keyed with the RSA public key's PEM": hs256("rsa", pemKey),
		"HS256 keyed with the RSA modulus":          hs256("rsa", rsaPub.N.Bytes()),
		"HS256 keyed with the published oct key":    hs256("oct", secret),
		"HS256 keyed with the oct key's JWK":        hs256("oct", jwkJSON),
		"alg none":                                  none(t, claims, "rsa"),
	} {
		t.Run(name, func(t *testing.T) { wantRefused(t, v, tok, "signature or algorithm is not accepted") })
	}

	// The keyfunc itself refuses a key whose alg, use or type does not fit,
	// whatever the signature.
	ec := authtest.MustKey(t, "ES256", "ec-no-alg")
	ec.OmitAlg = true
	enc := authtest.MustKey(t, "RS256", "enc")
	enc.Use = "enc"
	p.SetKeys(rsaKey, ec, enc)
	v2 := providerVerifier(t, p, nil)
	for name, header := range map[string]map[string]any{
		"RS256 token, ES256 key":            {"alg": "ES256", "kid": "rsa"},
		"ES256 token, EC key without alg":   {"alg": "RS256", "kid": "ec-no-alg"},
		"EdDSA token, EC key without alg":   {"alg": "EdDSA", "kid": "ec-no-alg"},
		"HS256 token, oct key":              {"alg": "HS256", "kid": "oct"},
		"RS256 token, key for encryption":   {"alg": "RS256", "kid": "enc"},
		"RS256 token without kid":           {"alg": "RS256"},
		"RS256 token, kid of no key at all": {"alg": "RS256", "kid": "nobody"},
	} {
		t.Run("keyfunc: "+name, func(t *testing.T) {
			tok := &jwt.Token{Header: header, Method: jwt.GetSigningMethod(header["alg"].(string))}
			var got verified
			key, err := v2.keys.keyfunc(context.Background(), &got)(tok)
			if err == nil || key != nil || got.key != nil {
				t.Errorf("keyfunc = %T, %v; want a refusal", key, err)
			}
		})
	}

	// In HS256 mode a provider's token is refused, whatever its key.
	hv := NewVerifier(secret)
	for _, alg := range []string{"RS256", "ES256", "EdDSA"} {
		k := authtest.MustKey(t, alg, "k")
		t.Run(alg+" in HS256 mode", func(t *testing.T) {
			wantRefused(t, hv, userToken(t, p, k, "alice"), "(HS256 only)")
		})
	}
	wantRefused(t, hv, none(t, claims, ""), "(HS256 only)")
}

// none returns claims as an unsigned token (alg none).
func none(t *testing.T, claims jwt.Claims, kid string) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodNone, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOIDCDiscovery(t *testing.T) {
	k := authtest.MustKey(t, "EdDSA", "k")
	p := authtest.Start(t, k)
	oidc := func(c *Config) { c.JWKSURL, c.Issuer, c.OIDCIssuerURL = "", "", p.Issuer() }
	v := providerVerifier(t, p, oidc)
	wantAccepted(t, v, userToken(t, p, k, "alice"), "alice")
	// The issuer defaults to OIDC_ISSUER_URL, and is checked.
	wantRefused(t, v, signed(t, k, p.Claims("alice", testAudience, time.Hour, map[string]any{"iss": "https://other.example"})), "issuer (iss)")

	tests := []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"document names another issuer", func(c *Config) { p.SetDiscoveryIssuer("https://idp.example") }, `names the issuer "https://idp.example"`},
		{"trailing slash", func(c *Config) { p.SetDiscoveryIssuer(""); c.OIDCIssuerURL += "/" }, "must be the issuer exactly"},
		{"no discovery document", func(c *Config) { c.OIDCIssuerURL += "/nowhere" }, "404"},
		{"plain http to another host", func(c *Config) { c.OIDCIssuerURL = "http://idp.example" }, "must be https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{OIDCIssuerURL: p.Issuer(), Audience: testAudience}
			tt.change(&c)
			if _, err := New(context.Background(), c); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// New refuses a configuration that is ambiguous or could not work.
func TestNewRefusesBadConfigs(t *testing.T) {
	k := authtest.MustKey(t, "RS256", "k")
	p := authtest.Start(t, k)
	empty := authtest.Start(t) // a JWK Set without a key
	secret := []byte("0123456789abcdef0123456789abcdef")
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"nothing", Config{}, "set a secret"},
		{"secret and JWKS", Config{Secret: secret, JWKSURL: p.JWKSURL(), Issuer: p.Issuer(), Audience: "a"}, "only one"},
		{"JWKS and OIDC", Config{JWKSURL: p.JWKSURL(), OIDCIssuerURL: p.Issuer(), Audience: "a"}, "only one"},
		{"JWKS without audience", Config{JWKSURL: p.JWKSURL(), Issuer: p.Issuer()}, "an issuer and an audience"},
		{"JWKS without issuer", Config{JWKSURL: p.JWKSURL(), Audience: "a"}, "an issuer and an audience"},
		{"JWKS over plain http", Config{JWKSURL: "http://idp.example/jwks.json", Issuer: "i", Audience: "a"}, "must be https"},
		{"JWKS not there", Config{JWKSURL: p.Issuer() + "/nothing", Issuer: "i", Audience: "a"}, "fetch the JWK Set"},
		{"JWKS without a key", Config{JWKSURL: empty.JWKSURL(), Issuer: "i", Audience: "a"}, "has no signing key"},
		{"bad admin claim", Config{Secret: secret, AdminClaim: "roles="}, "no value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := New(context.Background(), tt.c)
			if err == nil {
				v.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestCheckKeyURL(t *testing.T) {
	for s, ok := range map[string]bool{
		"https://idp.example/.well-known/jwks.json": true,
		"http://127.0.0.1:8081/jwks.json":           true,
		"http://localhost:8081":                     true,
		"http://[::1]:8081":                         true,
		"http://idp.example/jwks.json":              false,
		"http://10.0.0.1/jwks.json":                 false,
		"ftp://idp.example/jwks.json":               false,
		"/jwks.json":                                false,
		"":                                          false,
	} {
		if err := CheckKeyURL(s); (err == nil) != ok {
			t.Errorf("CheckKeyURL(%q) = %v, want ok %v", s, err, ok)
		}
	}
}

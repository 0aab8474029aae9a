// Package authtest is a tiny identity provider for tests and for trying
// orderd on one machine (examples/jwks): it generates signing keys, serves
// their JWK Set and an OpenID Connect discovery document over HTTP, and
// mints tokens signed with them. It is not an identity provider to run a
// shop with: it has no users, no login, and keeps its keys in memory.
package authtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/golang-jwt/jwt/v5"
)

// Paths the Provider serves.
const (
	JWKSPath      = "/jwks.json"
	DiscoveryPath = "/.well-known/openid-configuration"
)

// Key is a signing key of the Provider.
type Key struct {
	ID      string        // the kid
	Alg     string        // RS256, ES256 or EdDSA
	Signer  crypto.Signer // the private key
	OmitAlg bool          // publish the key without its alg member
	Use     string        // the published use member; "" publishes "sig"
	method  jwt.SigningMethod
}

// NewKey generates a key for alg (RS256: RSA 2048, ES256: P-256, EdDSA:
// Ed25519) called kid.
func NewKey(alg, kid string) (*Key, error) {
	k := &Key{ID: kid, Alg: alg}
	var err error
	switch alg {
	case "RS256":
		k.Signer, err = rsa.GenerateKey(rand.Reader, 2048)
		k.method = jwt.SigningMethodRS256
	case "ES256":
		k.Signer, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		k.method = jwt.SigningMethodES256
	case "EdDSA":
		_, k.Signer, err = ed25519.GenerateKey(rand.Reader)
		k.method = jwt.SigningMethodEdDSA
	default:
		return nil, fmt.Errorf("authtest: algorithm %q: want RS256, ES256 or EdDSA", alg)
	}
	if err != nil {
		return nil, fmt.Errorf("authtest: generate %s key: %w", alg, err)
	}
	return k, nil
}

// Sign signs claims with the key, its kid in the header.
func (k *Key) Sign(claims jwt.Claims) (string, error) {
	t := jwt.NewWithClaims(k.method, claims)
	t.Header[jwkset.HeaderKID] = k.ID
	s, err := t.SignedString(k.Signer)
	if err != nil {
		return "", fmt.Errorf("authtest: sign: %w", err)
	}
	return s, nil
}

// jwk returns the key's public JWK.
func (k *Key) jwk() (jwkset.JWKMarshal, error) {
	meta := jwkset.JWKMetadataOptions{KID: k.ID, ALG: jwkset.ALG(k.Alg), USE: jwkset.UseSig}
	if k.Use != "" {
		meta.USE = jwkset.USE(k.Use)
	}
	j, err := jwkset.NewJWKFromKey(k.Signer.Public(), jwkset.JWKOptions{Metadata: meta})
	if err != nil {
		return jwkset.JWKMarshal{}, fmt.Errorf("authtest: JWK of %s: %w", k.ID, err)
	}
	m := j.Marshal()
	if k.OmitAlg {
		m.ALG = ""
	}
	return m, nil
}

// Provider serves a JWK Set at JWKSPath and an OpenID Connect discovery
// document at DiscoveryPath. It is an http.Handler, safe for concurrent
// use.
type Provider struct {
	mu     sync.Mutex
	issuer string
	doc    string // the discovery document's issuer, if not issuer
	keys   []*Key
	extra  []jwkset.JWKMarshal

	fetches atomic.Int64
}

// NewProvider returns a provider of keys whose issuer is issuer (the URL it
// is served at).
func NewProvider(issuer string, keys ...*Key) *Provider {
	return &Provider{issuer: issuer, keys: keys}
}

// TB is the part of testing.TB that Start uses.
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// Start serves a provider of keys on a local httptest server, its issuer
// the server's URL, until the test ends.
func Start(t TB, keys ...*Key) *Provider {
	t.Helper()
	p := NewProvider("")
	p.SetKeys(keys...)
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	p.SetIssuer(srv.URL)
	return p
}

// MustKey is NewKey for tests.
func MustKey(t TB, alg, kid string) *Key {
	t.Helper()
	k, err := NewKey(alg, kid)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Issuer is the provider's issuer: its URL.
func (p *Provider) Issuer() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.issuer
}

// JWKSURL is the URL of the provider's JWK Set.
func (p *Provider) JWKSURL() string { return p.Issuer() + JWKSPath }

// SetIssuer sets the issuer (the URL the provider is served at).
func (p *Provider) SetIssuer(issuer string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.issuer = issuer
}

// SetDiscoveryIssuer makes the discovery document name issuer instead of
// the provider's own (a misconfigured or impostor provider).
func (p *Provider) SetDiscoveryIssuer(issuer string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.doc = issuer
}

// SetKeys replaces the published keys (a key rotation).
func (p *Provider) SetKeys(keys ...*Key) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = keys
}

// AddRawJWK publishes a JWK as is besides the keys (a symmetric key, for
// the algorithm-confusion tests).
func (p *Provider) AddRawJWK(j jwkset.JWKMarshal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.extra = append(p.extra, j)
}

// JWKSFetches is how many times the JWK Set was fetched.
func (p *Provider) JWKSFetches() int { return int(p.fetches.Load()) }

// Claims returns claims from the provider for sub and audience, valid for
// ttl from now, with extra claims added.
func (p *Provider) Claims(sub, audience string, ttl time.Duration, extra map[string]any) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{
		"iss": p.Issuer(),
		"sub": sub,
		"aud": audience,
		"iat": now.Unix(),
		"nbf": now.Add(-time.Second).Unix(),
		"exp": now.Add(ttl).Unix(),
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// ServeHTTP serves the JWK Set and the discovery document.
func (p *Provider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	issuer, doc, keys, extra := p.issuer, p.doc, p.keys, p.extra
	p.mu.Unlock()
	var body any
	switch r.URL.Path {
	case JWKSPath:
		p.fetches.Add(1)
		set := jwkset.JWKSMarshal{Keys: append([]jwkset.JWKMarshal{}, extra...)}
		for _, k := range keys {
			j, err := k.jwk()
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			set.Keys = append(set.Keys, j)
		}
		body = set
	case DiscoveryPath:
		if doc == "" {
			doc = issuer
		}
		body = map[string]any{
			"issuer":                                doc,
			"jwks_uri":                              issuer + JWKSPath,
			"id_token_signing_alg_values_supported": []string{"RS256", "ES256", "EdDSA"},
			"response_types_supported":              []string{"code"},
			"subject_types_supported":               []string{"public"},
		}
	default:
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(body)
}

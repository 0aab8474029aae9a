package auth

import (
	"cmp"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/MicahParks/jwkset"
	"github.com/MicahParks/keyfunc/v3"
	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
)

// Why keyfunc (github.com/MicahParks/keyfunc/v3, over its JWK Set storage
// github.com/MicahParks/jwkset) rather than coreos/go-oidc: keyfunc is a
// jwt.Keyfunc for golang-jwt/jwt v5, the library the HS256 way already
// uses, so both ways share one parser, one set of claim checks (exp, nbf,
// iss, aud, pinned algorithms) and the verified-token cache in front of
// them; it parses the JWKs (RSA, EC, OKP), checks a key's alg and use
// against the token, refreshes the set in the background and on an unknown
// kid behind a rate limiter. go-oidc's verifier is built for ID tokens (aud
// is the client id, its own claim parsing), has no background refresh and
// refetches on any failed signature without a rate limit of its own; we
// would have had a second token stack beside golang-jwt.

// remoteKeys are the identity provider's public keys: a JWK Set fetched at
// start, again every RefreshInterval in the background, and when a token
// names an unknown kid (at most once per UnknownKIDInterval).
type remoteKeys struct {
	url     string
	store   jwkset.Storage  // the keys as last fetched; reading it never fetches
	kf      keyfunc.Keyfunc // reads store through a client that refreshes it on an unknown kid
	client  jwkset.Storage  // that client
	flights singleflight.Group
	stop    context.CancelFunc
}

// newRemoteKeys finds the JWK Set (through OIDC discovery if c names an
// issuer), fetches it, and starts refreshing it.
func newRemoteKeys(ctx context.Context, c Config) (*remoteKeys, error) {
	hc := c.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: httpTimeout}
	}
	log := cmp.Or(c.Log, slog.Default())
	jwksURL := c.JWKSURL
	if c.OIDCIssuerURL != "" {
		var err error
		if jwksURL, err = Discover(ctx, hc, c.OIDCIssuerURL); err != nil {
			return nil, err
		}
	}
	if err := CheckKeyURL(jwksURL); err != nil {
		return nil, fmt.Errorf("auth: JWK Set: %w", err)
	}
	bg, stop := context.WithCancel(context.WithoutCancel(ctx))
	store, err := jwkset.NewStorageFromHTTP(jwksURL, jwkset.HTTPClientStorageOptions{
		Client:          hc,
		Ctx:             bg,
		HTTPTimeout:     httpTimeout,
		RefreshInterval: cmp.Or(c.RefreshInterval, DefaultRefreshInterval),
		RefreshErrorHandler: func(ctx context.Context, err error) {
			log.Warn("auth: fetching the JWK Set failed; the keys fetched before stay in use", "url", jwksURL, "err", err)
		},
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("auth: fetch the JWK Set %s: %w", jwksURL, err)
	}
	client, err := jwkset.NewHTTPClient(jwkset.HTTPClientOptions{
		HTTPURLs:          map[string]jwkset.Storage{jwksURL: store},
		PrioritizeHTTP:    true,
		RateLimitWaitMax:  httpTimeout, // bounds the wait for the limiter and the fetch
		RefreshUnknownKID: rate.NewLimiter(rate.Every(cmp.Or(c.UnknownKIDInterval, DefaultUnknownKIDInterval)), 1),
	})
	if err != nil {
		stop()
		return nil, fmt.Errorf("auth: JWK Set client: %w", err)
	}
	kf, err := keyfunc.New(keyfunc.Options{Ctx: bg, Storage: client, UseWhitelist: []jwkset.USE{jwkset.UseSig, ""}})
	if err != nil {
		stop()
		return nil, fmt.Errorf("auth: keyfunc: %w", err)
	}
	r := &remoteKeys{url: jwksURL, store: store, kf: kf, client: client, stop: stop}
	if err := r.checkUsable(ctx); err != nil {
		stop()
		return nil, err
	}
	return r, nil
}

func (r *remoteKeys) close() { r.stop() }

// checkUsable refuses a JWK Set without a single key this service can
// verify tokens with: surely the wrong URL.
func (r *remoteKeys) checkUsable(ctx context.Context) error {
	jwks, err := r.store.KeyReadAll(ctx)
	if err != nil {
		return fmt.Errorf("auth: read the JWK Set: %w", err)
	}
	for _, j := range jwks {
		m := j.Marshal()
		if m.KID == "" || (m.USE != "" && m.USE != jwkset.UseSig) {
			continue
		}
		for _, alg := range providerAlgs {
			if (m.ALG == "" || m.ALG.String() == alg) && fits(alg, publicKey(j.Key())) {
				return nil
			}
		}
	}
	return fmt.Errorf("auth: the JWK Set at %s has no signing key with a kid for RS256, ES256 or EdDSA (%d keys in all)", r.url, len(jwks))
}

// keyfunc returns the jwt.Keyfunc of one token: the key named by its kid,
// provided that the key's own alg (if it has one) is the token's, its use
// (if it has one) is sig, and its type fits the token's algorithm (RSA for
// RS256, EC P-256 for ES256, Ed25519 for EdDSA). An unknown kid makes one
// fetch of the JWK Set for every request waiting on it, if the rate limit
// allows one. It records the key in t, for the cache.
func (r *remoteKeys) keyfunc(ctx context.Context, t *verified) jwt.Keyfunc {
	return func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header[jwkset.HeaderKID].(string)
		if kid == "" {
			return nil, errNoKID
		}
		if _, err := r.store.KeyRead(ctx, kid); err != nil {
			_, err, _ := r.flights.Do(kid, func() (any, error) {
				return r.client.KeyRead(context.WithoutCancel(ctx), kid)
			})
			if err != nil {
				return nil, fmt.Errorf("%w: %w", errUnknownKID, err)
			}
		}
		alg := tok.Method.Alg()
		key, err := r.kf.KeyfuncCtx(ctx)(tok)
		switch {
		case errors.Is(err, jwkset.ErrKeyNotFound):
			return nil, fmt.Errorf("%w: %w", errUnknownKID, err)
		case err != nil:
			return nil, fmt.Errorf("%w: %w", errKeyMismatch, err)
		case !fits(alg, key):
			return nil, fmt.Errorf("%w: %s with a %T", errKeyMismatch, alg, key)
		}
		t.kid, t.alg, t.key = kid, alg, key
		return key, nil
	}
}

// stillPublished reports whether the key that verified a remembered token
// is still in the JWK Set, under the same kid and with the same alg and
// use, as the keyfunc would require of the token now.
func (r *remoteKeys) stillPublished(ctx context.Context, t verified) bool {
	j, err := r.store.KeyRead(ctx, t.kid)
	if err != nil {
		return false
	}
	m := j.Marshal()
	if (m.ALG != "" && m.ALG.String() != t.alg) || (m.USE != "" && m.USE != jwkset.UseSig) {
		return false
	}
	k, ok := publicKey(j.Key()).(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(t.key)
}

// fits reports whether key is of the type alg signs with.
func fits(alg string, key any) bool {
	switch alg {
	case "RS256":
		k, ok := key.(*rsa.PublicKey)
		return ok && k.N.BitLen() >= 2048
	case "ES256":
		k, ok := key.(*ecdsa.PublicKey)
		return ok && k.Curve == elliptic.P256()
	case "EdDSA":
		_, ok := key.(ed25519.PublicKey)
		return ok
	}
	return false
}

// publicKey returns the public half of a private key (a JWK Set should
// hold none, keyfunc does the same), or key itself.
func publicKey(key any) any {
	if k, ok := key.(interface{ Public() crypto.PublicKey }); ok {
		return k.Public()
	}
	return key
}

// Discover reads an OpenID Connect issuer's discovery document
// (<issuer>/.well-known/openid-configuration) and returns its jwks_uri. The
// document's issuer must be exactly issuer (OpenID Connect Discovery 1.0,
// section 4.3): a document that names another one is refused.
func Discover(ctx context.Context, hc *http.Client, issuer string) (string, error) {
	if err := CheckKeyURL(issuer); err != nil {
		return "", fmt.Errorf("auth: OIDC issuer: %w", err)
	}
	u := strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
	ctx, cancel := context.WithTimeout(ctx, httpTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", fmt.Errorf("auth: OIDC discovery: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("auth: OIDC discovery: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("auth: OIDC discovery: GET %s answered %s", u, resp.Status)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return "", fmt.Errorf("auth: OIDC discovery: decode %s: %w", u, err)
	}
	switch {
	case doc.Issuer != issuer:
		return "", fmt.Errorf("auth: OIDC discovery: %s names the issuer %q, not %q (OIDC_ISSUER_URL must be the issuer exactly, trailing slash included)", u, doc.Issuer, issuer)
	case doc.JWKSURI == "":
		return "", fmt.Errorf("auth: OIDC discovery: %s has no jwks_uri", u)
	}
	return doc.JWKSURI, nil
}

// CheckKeyURL refuses a URL to fetch keys from that is not https, except
// plain http to a loopback address (a trial on one machine): keys fetched
// over plain http could be anyone's.
func CheckKeyURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if h := u.Hostname(); h == "localhost" || net.ParseIP(h).IsLoopback() {
			return nil
		}
		return fmt.Errorf("%q must be https (plain http only to a loopback address, for a trial)", s)
	}
	return fmt.Errorf("%q must be an https URL", s)
}

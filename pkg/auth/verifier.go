package auth

import (
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/golang-jwt/jwt/v5"
	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/flashsale/orderd/pkg/order"
)

// Defaults of Config.
const (
	// DefaultCacheSize is how many verified tokens a Verifier remembers:
	// a flash sale's buyers, each polling with one token. An entry is about
	// 250 bytes, so 200k of them take about 50 MB.
	DefaultCacheSize = 200_000
	// DefaultRefreshInterval is how often the JWK Set is fetched again in
	// the background: how long a key the identity provider withdrew is
	// still accepted, at most.
	DefaultRefreshInterval = 5 * time.Minute
	// DefaultUnknownKIDInterval is the least time between two fetches of
	// the JWK Set caused by tokens whose kid is unknown, so that tokens
	// with made-up kids cannot make the service hammer the provider.
	DefaultUnknownKIDInterval = 30 * time.Second
	// httpTimeout bounds each fetch of the discovery document or JWK Set.
	httpTimeout = 10 * time.Second
)

// Config says how a Verifier checks tokens. Exactly one of Secret, JWKSURL
// and OIDCIssuerURL is set.
type Config struct {
	// Secret verifies HS256 tokens, and only those.
	Secret []byte
	// JWKSURL is the identity provider's JWK Set: RS256, ES256 and EdDSA
	// tokens are verified with its keys, and only those.
	JWKSURL string
	// OIDCIssuerURL is an OpenID Connect issuer: its discovery document
	// (<issuer>/.well-known/openid-configuration, whose issuer must be
	// exactly this one) names the JWK Set.
	OIDCIssuerURL string

	// Issuer, if set, must be the token's iss. It is required with JWKSURL
	// and defaults to OIDCIssuerURL.
	Issuer string
	// Audience, if set, must be one of the token's aud. It is required with
	// JWKSURL or OIDCIssuerURL: an identity provider signs tokens for many
	// services.
	Audience string
	// AdminClaim is which claims make an admin, in ParseAdminClaim's
	// syntax; empty: DefaultAdminClaim.
	AdminClaim string
	// CacheSize bounds the verified tokens remembered: 0 is
	// DefaultCacheSize, a negative size remembers none.
	CacheSize int

	// RefreshInterval is how often the JWK Set is fetched in the
	// background; 0: DefaultRefreshInterval.
	RefreshInterval time.Duration
	// UnknownKIDInterval is the least time between two fetches caused by
	// an unknown kid; 0: DefaultUnknownKIDInterval.
	UnknownKIDInterval time.Duration
	// HTTPClient fetches the discovery document and the JWK Set; nil: a
	// client with a 10 s timeout.
	HTTPClient *http.Client
	// Log receives the failed fetches of the JWK Set; nil: slog.Default().
	Log *slog.Logger
}

// Verifier checks bearer tokens. It is safe for concurrent use.
//
// It remembers the tokens it has verified, in a bounded LRU cache keyed by
// the token's SHA-256: a client polling its order or retrying a checkout
// sends the same token many times, and parsing the JSON and checking the
// signature each time was the ingress's largest cost after the network
// (8% of its CPU in a flash sale's profile with HS256; an RS256 check costs
// far more). Only tokens that passed every check (signature, algorithm,
// iss, aud, sub) are remembered, with who they speak for; a remembered
// token is still checked against the clock (exp and nbf) on every use, and
// with an identity provider, against its JWK Set: once the key that signed
// it is withdrawn, it is verified again like a new token, and refused.
type Verifier struct {
	parser *jwt.Parser
	secret []byte      // HS256; nil with an identity provider
	keys   *remoteKeys // the identity provider's keys; nil with a secret
	algs   string      // the accepted algorithms, for error messages
	admin  AdminClaim
	cache  *lru.Cache[[sha256.Size]byte, verified] // nil: none
	now    func() time.Time
}

// verified is a token that passed verification: who it speaks for, when it
// is valid, and the identity provider's key that signed it.
type verified struct {
	p        Principal
	nbf, exp int64 // Unix seconds; nbf 0 if the token has none
	kid, alg string
	key      any
}

// The algorithms each way accepts; nothing else is ever parsed (alg none
// included).
var (
	secretAlgs   = []string{jwt.SigningMethodHS256.Alg()}
	providerAlgs = []string{jwt.SigningMethodRS256.Alg(), jwt.SigningMethodES256.Alg(), jwt.SigningMethodEdDSA.Alg()}
)

// New returns a Verifier configured by c. With an identity provider it
// fetches the discovery document and the JWK Set before it returns (an
// error if either fails: a wrong URL is found at start-up, not at the first
// request) and keeps the keys fresh in the background until Close.
func New(ctx context.Context, c Config) (*Verifier, error) {
	admin, err := ParseAdminClaim(cmp.Or(c.AdminClaim, DefaultAdminClaim))
	if err != nil {
		return nil, err
	}
	v := &Verifier{admin: admin, now: time.Now}
	switch n := countSet(len(c.Secret) > 0, c.JWKSURL != "", c.OIDCIssuerURL != ""); {
	case n == 0:
		return nil, errors.New("auth: set a secret (HS256), a JWK Set URL or an OIDC issuer URL")
	case n > 1:
		return nil, errors.New("auth: set only one of a secret (HS256), a JWK Set URL and an OIDC issuer URL")
	case len(c.Secret) > 0:
		v.secret = c.Secret
		v.algs = "HS256 only"
	default:
		c.Issuer = cmp.Or(c.Issuer, c.OIDCIssuerURL)
		if c.Issuer == "" || c.Audience == "" {
			return nil, errors.New("auth: an identity provider's tokens need an issuer and an audience to check")
		}
		if v.keys, err = newRemoteKeys(ctx, c); err != nil {
			return nil, err
		}
		v.algs = "RS256, ES256 or EdDSA with a key of the identity provider"
	}
	algs := secretAlgs
	if v.keys != nil {
		algs = providerAlgs
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(algs),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(leeway),
		jwt.WithTimeFunc(func() time.Time { return v.now() }),
	}
	if c.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(c.Issuer))
	}
	if c.Audience != "" {
		opts = append(opts, jwt.WithAudience(c.Audience))
	}
	v.parser = jwt.NewParser(opts...)
	if c.CacheSize >= 0 {
		// lru.New fails only for a size below 1.
		v.cache, _ = lru.New[[sha256.Size]byte, verified](cmp.Or(c.CacheSize, DefaultCacheSize))
	}
	return v, nil
}

// NewVerifier returns a verifier of HS256 tokens signed with secret, with
// the default admin claim and cache.
func NewVerifier(secret []byte) *Verifier {
	v, err := New(context.Background(), Config{Secret: secret})
	if err != nil {
		panic(fmt.Sprintf("auth.NewVerifier: %v", err)) // only an empty secret fails
	}
	return v
}

func countSet(set ...bool) int {
	n := 0
	for _, s := range set {
		if s {
			n++
		}
	}
	return n
}

// Close stops refreshing the identity provider's keys. The Verifier keeps
// verifying with the keys it has.
func (v *Verifier) Close() {
	if v.keys != nil {
		v.keys.close()
	}
}

// Verify is VerifyContext without a context.
func (v *Verifier) Verify(token string) (Principal, error) {
	return v.VerifyContext(context.Background(), token)
}

// VerifyContext parses and checks a token. Every failure is an
// EUNAUTHORIZED error whose message says what was wrong, without echoing
// the token. ctx bounds the fetch of the JWK Set that a token with an
// unknown kid may cause.
func (v *Verifier) VerifyContext(ctx context.Context, token string) (Principal, error) {
	now := v.now()
	var id [sha256.Size]byte
	if v.cache != nil {
		id = sha256.Sum256([]byte(token))
		if t, ok := v.cache.Get(id); ok {
			if err := t.checkTime(now); err != nil {
				if errors.Is(err, jwt.ErrTokenExpired) {
					v.cache.Remove(id)
				}
				return Principal{}, v.refusal(err)
			}
			if v.keys == nil || v.keys.stillPublished(ctx, t) {
				return t.p, nil
			}
			// Its key was withdrawn: verify it again, as a new token.
			v.cache.Remove(id)
		}
	}
	t, err := v.parse(ctx, token)
	if err != nil {
		return Principal{}, err
	}
	if v.cache != nil {
		v.cache.Add(id, t)
	}
	return t.p, nil
}

// parse verifies a token that is not remembered.
func (v *Verifier) parse(ctx context.Context, token string) (verified, error) {
	var t verified
	keyfunc := v.secretKey
	if v.keys != nil {
		keyfunc = v.keys.keyfunc(ctx, &t)
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, keyfunc); err != nil {
		return verified{}, v.refusal(err)
	}
	sub, err := claims.GetSubject()
	if err != nil || sub == "" || len(sub) > MaxUserIDLen {
		return verified{}, order.Errorf(order.EUNAUTHORIZED, "the token's sub claim must name a user (1 to %d bytes)", MaxUserIDLen)
	}
	exp, err := claims.GetExpirationTime()
	if err != nil || exp == nil { // the parser requires it
		return verified{}, v.refusal(jwt.ErrTokenRequiredClaimMissing)
	}
	t.exp = exp.Unix()
	if nbf, _ := claims.GetNotBefore(); nbf != nil {
		t.nbf = nbf.Unix()
	}
	admin, err := v.admin.Match(claims)
	if err != nil {
		return verified{}, order.Errorf(order.EUNAUTHORIZED, "the bearer token's admin claim is malformed: %v", err)
	}
	t.p = Principal{UserID: sub, Admin: admin}
	return t, nil
}

// secretKey is the key of HS256 tokens, and of nothing else.
func (v *Verifier) secretKey(t *jwt.Token) (any, error) {
	if t.Method != jwt.SigningMethodHS256 {
		return nil, errKeyMismatch
	}
	return v.secret, nil
}

// checkTime checks a remembered token against the clock exactly as the
// parser does (golang-jwt's validator, with the same leeway).
func (t verified) checkTime(now time.Time) error {
	if !now.Before(time.Unix(t.exp, 0).Add(leeway)) {
		return jwt.ErrTokenExpired
	}
	if now.Before(time.Unix(t.nbf, 0).Add(-leeway)) {
		return jwt.ErrTokenNotValidYet
	}
	return nil
}

// The keyfunc's refusals (jwks.go).
var (
	errNoKID       = errors.New("the token has no kid header")
	errUnknownKID  = errors.New("the token's kid is not in the JWK Set")
	errKeyMismatch = errors.New("the token's algorithm does not fit the key")
)

// refusal turns a verification error into the EUNAUTHORIZED error the
// client sees.
func (v *Verifier) refusal(err error) error {
	msg := "the bearer token is invalid"
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		msg = "the bearer token is malformed"
	case errors.Is(err, errNoKID):
		msg = "the bearer token has no kid header naming the identity provider's key that signed it"
	case errors.Is(err, errUnknownKID):
		msg = "the bearer token's kid is not a key in the identity provider's JWK Set"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		msg = "the bearer token's signature or algorithm is not accepted (" + v.algs + ")"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		msg = "the bearer token's issuer (iss) is not the one this service trusts"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		msg = "the bearer token's audience (aud) does not name this service"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		msg = "the bearer token lacks a required claim (exp, and iss and aud where they are checked)"
	case errors.Is(err, jwt.ErrTokenExpired):
		msg = "the bearer token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		msg = "the bearer token is not valid yet (nbf)"
	}
	return &order.Error{Code: order.EUNAUTHORIZED, Message: msg}
}

// Package auth mints and verifies the service's bearer tokens: HS256 JWTs
// (golang-jwt/jwt v5) whose subject is the user id. The algorithm is pinned,
// exp is required, nbf is honoured.
package auth

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashsale/orderd/pkg/order"
)

// MaxUserIDLen bounds the sub claim.
const MaxUserIDLen = 128

// Claims are the token's claims.
type Claims struct {
	jwt.RegisteredClaims
	Admin bool   `json:"admin,omitempty"`
	Role  string `json:"role,omitempty"`
}

// Principal is who a verified token speaks for.
type Principal struct {
	UserID string
	Admin  bool
}

// leeway is the clock skew allowed on exp and nbf.
const leeway = 5 * time.Second

// Verifier checks tokens signed with one secret.
//
// It remembers the tokens it has verified, until they expire: a client
// polling its order or retrying a checkout sends the same token many times,
// and parsing the JSON and checking the HMAC again each time was the
// ingress's largest cost after the network (8% of its CPU in a flash sale's
// profile). A remembered token is still checked against the clock (exp and
// nbf) on every use; only tokens that passed every check are remembered,
// at most verifiedMax of them.
type Verifier struct {
	secret []byte
	parser *jwt.Parser
	now    func() time.Time

	mu       sync.Mutex
	verified map[string]verified
}

// verified is a token that passed verification: who it speaks for and
// when it is valid.
type verified struct {
	p        Principal
	nbf, exp time.Time
}

// verifiedMax bounds the remembered tokens; past it, the cache starts over.
const verifiedMax = 100_000

// NewVerifier returns a verifier for HS256 tokens signed with secret.
func NewVerifier(secret []byte) *Verifier {
	return &Verifier{
		secret: secret,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(leeway),
		),
		now:      time.Now,
		verified: map[string]verified{},
	}
}

// Verify parses and checks a token. Every failure is an EUNAUTHORIZED error
// whose message says what was wrong, without echoing the token.
func (v *Verifier) Verify(token string) (Principal, error) {
	now := v.now()
	v.mu.Lock()
	t, ok := v.verified[token]
	v.mu.Unlock()
	if ok {
		switch {
		case now.After(t.exp.Add(leeway)):
			return Principal{}, &order.Error{Code: order.EUNAUTHORIZED, Message: reason(jwt.ErrTokenExpired)}
		case now.Before(t.nbf.Add(-leeway)):
			return Principal{}, &order.Error{Code: order.EUNAUTHORIZED, Message: reason(jwt.ErrTokenNotValidYet)}
		}
		return t.p, nil
	}
	var c Claims
	_, err := v.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return v.secret, nil })
	if err != nil {
		return Principal{}, &order.Error{Code: order.EUNAUTHORIZED, Message: reason(err)}
	}
	if c.Subject == "" || len(c.Subject) > MaxUserIDLen {
		return Principal{}, order.Errorf(order.EUNAUTHORIZED, "the token's sub claim must name a user (1 to %d bytes)", MaxUserIDLen)
	}
	p := Principal{UserID: c.Subject, Admin: c.Admin || c.Role == "admin"}
	t = verified{p: p, exp: c.ExpiresAt.Time}
	if c.NotBefore != nil {
		t.nbf = c.NotBefore.Time
	}
	v.mu.Lock()
	if len(v.verified) >= verifiedMax {
		clear(v.verified)
	}
	v.verified[token] = t
	v.mu.Unlock()
	return p, nil
}

func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the bearer token is malformed"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the bearer token's signature or algorithm is not accepted (HS256 only)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "the bearer token has no exp claim"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the bearer token has expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "the bearer token is not valid yet (nbf)"
	}
	return "the bearer token is invalid"
}

// Mint signs a token for sub that expires after ttl.
func Mint(secret []byte, sub string, admin bool, ttl time.Duration) (string, error) {
	if sub == "" || len(sub) > MaxUserIDLen {
		return "", fmt.Errorf("mint token: sub must be 1 to %d bytes", MaxUserIDLen)
	}
	now := time.Now()
	c := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   sub,
			IssuedAt:  jwt.NewNumericDate(now),
			NotBefore: jwt.NewNumericDate(now.Add(-time.Second)),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Admin: admin,
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

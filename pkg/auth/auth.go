// Package auth mints and verifies the service's bearer tokens (JWTs, with
// golang-jwt/jwt v5) whose subject is the user id. A Verifier checks tokens
// one of two ways, chosen by its Config: HS256 with a shared secret
// (development, tests, small shops), or the shop's identity provider:
// RS256, ES256 and EdDSA keys from a JWK Set (jwks.go). The algorithms are
// pinned per way, exp is required, nbf is honoured, iss and aud are checked,
// and which claims make an admin is configurable (admin.go).
package auth

import (
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxUserIDLen bounds the sub claim.
const MaxUserIDLen = 128

// Claims are the claims of a token that Mint signs.
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

// MintOption sets an optional claim of a token that Mint signs.
type MintOption func(*Claims)

// WithIssuer sets the token's iss claim.
func WithIssuer(iss string) MintOption {
	return func(c *Claims) { c.Issuer = iss }
}

// WithAudience sets the token's aud claim.
func WithAudience(aud string) MintOption {
	return func(c *Claims) { c.Audience = jwt.ClaimStrings{aud} }
}

// Mint signs an HS256 token for sub that expires after ttl. An admin token
// carries admin: true, which DefaultAdminClaim accepts.
func Mint(secret []byte, sub string, admin bool, ttl time.Duration, opts ...MintOption) (string, error) {
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
	for _, o := range opts {
		o(&c)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("mint token: %w", err)
	}
	return s, nil
}

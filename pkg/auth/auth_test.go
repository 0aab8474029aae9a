package auth

import (
	"crypto/sha256"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/flashsale/orderd/pkg/order"
)

// TestVerifyRemembersOnlyValidTokens: a verified token is remembered and
// still expires on time; a bad one is refused every time.
func TestVerifyRemembersOnlyValidTokens(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	v := NewVerifier(secret)
	clock := time.Now()
	v.now = func() time.Time { return clock }

	tok, err := Mint(secret, "u1", true, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // parsed, then remembered
		p, err := v.Verify(tok)
		if err != nil || p.UserID != "u1" || !p.Admin {
			t.Fatalf("Verify: %+v, %v", p, err)
		}
	}
	if v.cache.Len() != 1 {
		t.Errorf("%d tokens remembered, want 1", v.cache.Len())
	}
	// Past exp (and the leeway), the remembered token is refused.
	clock = clock.Add(time.Minute + 6*time.Second)
	if _, err := v.Verify(tok); order.ErrorCode(err) != order.EUNAUTHORIZED {
		t.Errorf("expired remembered token: %v, want EUNAUTHORIZED", err)
	}

	// A token signed with another key is never remembered.
	bad, _ := Mint([]byte("another-secret-another-secret-12"), "u2", false, time.Hour)
	for range 2 {
		if _, err := v.Verify(bad); order.ErrorCode(err) != order.EUNAUTHORIZED {
			t.Errorf("wrong key: %v", err)
		}
	}
	// Nor one not valid yet; it becomes valid at nbf.
	nbf := jwt.NewWithClaims(jwt.SigningMethodHS256, Claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: "u3", NotBefore: jwt.NewNumericDate(clock.Add(time.Hour)), ExpiresAt: jwt.NewNumericDate(clock.Add(2 * time.Hour))}})
	early, _ := nbf.SignedString(secret)
	if _, err := v.Verify(early); order.ErrorCode(err) != order.EUNAUTHORIZED {
		t.Errorf("token before nbf: %v", err)
	}
	// The expired token was forgotten when it was refused; the refused
	// ones were never remembered.
	if remembered(v, bad) || remembered(v, early) || v.cache.Len() != 0 {
		t.Errorf("refused tokens were remembered: %d entries", v.cache.Len())
	}
	clock = clock.Add(time.Hour + time.Second)
	if p, err := v.Verify(early); err != nil || p.UserID != "u3" {
		t.Errorf("token at nbf: %+v %v", p, err)
	}
}

// remembered reports whether v's cache holds token.
func remembered(v *Verifier, token string) bool {
	return v.cache.Contains(sha256.Sum256([]byte(token)))
}

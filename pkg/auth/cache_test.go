package auth

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flashsale/orderd/pkg/auth/authtest"
)

var benchSecret = []byte("0123456789abcdef0123456789abcdef")

// mintN returns n valid HS256 tokens of distinct users.
func mintN(t testing.TB, n int) []string {
	t.Helper()
	toks := make([]string, n)
	for i := range toks {
		var err error
		if toks[i], err = Mint(benchSecret, fmt.Sprintf("u%d", i), false, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	return toks
}

// The cache holds at most CacheSize tokens and forgets the least recently
// used first (before, it was a map cleared at 100k: a sale with more buyers
// than that parsed every token again).
func TestCacheIsABoundedLRU(t *testing.T) {
	const size = 10
	v, err := New(context.Background(), Config{Secret: benchSecret, CacheSize: size})
	if err != nil {
		t.Fatal(err)
	}
	toks := mintN(t, 2*size+5)
	for i, tok := range toks {
		wantAccepted(t, v, tok, fmt.Sprintf("u%d", i))
		if got := v.cache.Len(); got > size {
			t.Fatalf("after %d tokens the cache holds %d, want at most %d", i+1, got, size)
		}
	}
	if got := v.cache.Len(); got != size {
		t.Errorf("cache holds %d, want %d", got, size)
	}
	old, recent := toks[:len(toks)-size], toks[len(toks)-size:]
	for i, tok := range old {
		if remembered(v, tok) {
			t.Errorf("token %d of the oldest is still remembered", i)
		}
	}
	for i, tok := range recent {
		if !remembered(v, tok) {
			t.Errorf("token %d of the %d most recent is not remembered", i, size)
		}
	}
	// Using the oldest remembered token makes it the newest: the next new
	// token pushes out the one after it.
	wantAccepted(t, v, recent[0], fmt.Sprintf("u%d", len(old)))
	wantAccepted(t, v, old[0], "u0") // forgotten, verified again
	if !remembered(v, recent[0]) || remembered(v, recent[1]) || v.cache.Len() != size {
		t.Errorf("least recently used not evicted first: recent[0] %v, recent[1] %v, len %d",
			remembered(v, recent[0]), remembered(v, recent[1]), v.cache.Len())
	}

	// A negative size remembers nothing, and verifies all the same.
	off, err := New(context.Background(), Config{Secret: benchSecret, CacheSize: -1})
	if err != nil {
		t.Fatal(err)
	}
	wantAccepted(t, off, toks[0], "u0")
	if off.cache != nil {
		t.Error("CacheSize -1 has a cache")
	}
}

// BenchmarkVerifyCached is the verification of a token the verifier has
// seen before: what most requests of a sale cost (a buyer polls its order
// with one token). BenchmarkVerifyUncached is the first time.
func BenchmarkVerifyCached(b *testing.B) {
	for _, alg := range []string{"HS256", "RS256", "ES256", "EdDSA"} {
		b.Run(alg, func(b *testing.B) {
			v, tok := benchVerifier(b, alg, 0)
			if _, err := v.Verify(tok); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyUncached(b *testing.B) {
	for _, alg := range []string{"HS256", "RS256", "ES256", "EdDSA"} {
		b.Run(alg, func(b *testing.B) {
			v, tok := benchVerifier(b, alg, -1)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := v.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchVerifier returns a verifier for alg (HS256: a secret; else a local
// provider) with cacheSize, and a valid token for it.
func benchVerifier(b *testing.B, alg string, cacheSize int) (*Verifier, string) {
	if alg == "HS256" {
		v, err := New(context.Background(), Config{Secret: benchSecret, CacheSize: cacheSize})
		if err != nil {
			b.Fatal(err)
		}
		return v, mintN(b, 1)[0]
	}
	k := authtest.MustKey(b, alg, "k")
	p := authtest.Start(b, k)
	v, err := New(context.Background(), Config{JWKSURL: p.JWKSURL(), Issuer: p.Issuer(), Audience: testAudience, CacheSize: cacheSize})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(v.Close)
	tok, err := k.Sign(p.Claims("alice", testAudience, time.Hour, map[string]any{"roles": []string{"buyer"}}))
	if err != nil {
		b.Fatal(err)
	}
	return v, tok
}

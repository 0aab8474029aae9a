// Package redistest opens the local Redis for a test under a key prefix of
// its own, and deletes that prefix's keys when the test ends.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/flashsale/orderd/pkg/redisstore"
)

// DefaultURL is the server tests use unless TEST_REDIS_URL names another.
const DefaultURL = "redis://127.0.0.1:6379/0"

// URL returns the test server's URL.
func URL() string {
	if u := os.Getenv("TEST_REDIS_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// New returns a store with a fresh prefix, and that prefix.
func New(tb testing.TB) (*redisstore.Store, string) {
	tb.Helper()
	b := make([]byte, 6)
	rand.Read(b)
	prefix := "test:" + hex.EncodeToString(b) + ":"
	ctx := context.Background()
	s, err := redisstore.Open(ctx, URL(), prefix)
	if err != nil {
		tb.Fatalf("redistest: %v (is Redis running? run scripts/deps.sh)", err)
	}
	tb.Cleanup(func() {
		iter := s.Client().Scan(ctx, 0, prefix+"*", 1000).Iterator()
		for iter.Next(ctx) {
			s.Client().Del(ctx, iter.Val())
		}
		s.Close()
	})
	return s, prefix
}

// Ping checks that the test server answers, for a TestMain that wants one
// clear message when Redis is not running.
func Ping(ctx context.Context) error {
	s, err := redisstore.Open(ctx, URL(), "")
	if err != nil {
		return err
	}
	return s.Close()
}

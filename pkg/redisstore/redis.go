// Package redisstore holds what the service keeps in Redis (go-redis v9):
// each user's cart, one hash per user as in the design, and the cache of
// order status that clients poll. Every key starts with a prefix so that
// tests (and several deployments) can share one server.
package redisstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flashsale/orderd/pkg/batch"
)

// Store wraps a Redis client and the key prefix.
type Store struct {
	rdb    *redis.Client
	prefix string
	pipe   *batch.Batcher[pipeRequest, struct{}] // the hot paths' shared pipelines (pipeline.go)

	soldOutTTL time.Duration // the sold-out markers' time to live, if not SoldOutTTL (tests)
}

// Open connects to the Redis server at url and checks that it answers.
// Every key is written under prefix. The URL carries the credentials and
// TLS: redis://user:password@host:port/db (an ACL user; a password alone is
// the default user's), rediss:// for TLS, which trusts the system's CAs
// unless an Option (WithTLSFiles) says otherwise.
func Open(ctx context.Context, url, prefix string, opts ...Option) (*Store, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("redis url: %w", err)
	}
	for _, o := range opts {
		if err := o(opt); err != nil {
			return nil, err
		}
	}
	opt.PoolSize = 64
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		rdb.Close()
		return nil, fmt.Errorf("ping redis: %w", err)
	}
	return &Store{rdb: rdb, prefix: prefix, pipe: newPipeBatcher(rdb)}, nil
}

// An Option changes how Open connects.
type Option func(*redis.Options) error

// WithTLSFiles makes a rediss:// connection trust the CA in caFile (PEM)
// instead of the system's, and present the client certificate in certFile
// and keyFile (PEM; Redis asks for one unless tls-auth-clients is no).
// Empty names are not used.
func WithTLSFiles(caFile, certFile, keyFile string) Option {
	return func(o *redis.Options) error {
		if o.TLSConfig == nil {
			return errors.New("redis: TLS files need a rediss:// URL")
		}
		if caFile != "" {
			pem, err := os.ReadFile(caFile)
			if err != nil {
				return fmt.Errorf("redis TLS CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return fmt.Errorf("redis TLS CA: no PEM certificate in %s", caFile)
			}
			o.TLSConfig.RootCAs = pool
		}
		if (certFile == "") != (keyFile == "") {
			return errors.New("redis: a client certificate needs both its certificate and its key file")
		}
		if certFile != "" {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return fmt.Errorf("redis TLS client certificate: %w", err)
			}
			o.TLSConfig.Certificates = []tls.Certificate{cert}
		}
		return nil
	}
}

// Client returns the underlying client.
func (s *Store) Client() *redis.Client { return s.rdb }

// Ping checks that Redis answers (for readiness).
func (s *Store) Ping(ctx context.Context) error { return s.rdb.Ping(ctx).Err() }

// Close closes the client.
func (s *Store) Close() error { return s.rdb.Close() }

func (s *Store) key(parts ...string) string {
	k := s.prefix
	for _, p := range parts {
		k += p
	}
	return k
}

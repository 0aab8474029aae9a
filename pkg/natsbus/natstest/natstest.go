// Package natstest starts a real NATS server with JetStream for a test, on a
// free loopback port with its own store, shut down when the test ends.
package natstest

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/flashsale/orderd/pkg/natsbus"
)

// Start starts a server with fsync on every write (the default
// configuration) and returns it; its URL is s.ClientURL().
func Start(tb testing.TB) *server.Server {
	tb.Helper()
	return StartDir(tb, tb.TempDir())
}

// StartDir starts a server on dir, so a test can stop it and start another
// on the same store to see what survived.
func StartDir(tb testing.TB, dir string) *server.Server {
	tb.Helper()
	s, err := natsbus.StartEmbedded(natsbus.EmbeddedConfig{Addr: "127.0.0.1:0", StoreDir: dir, SyncAlways: true})
	if err != nil {
		tb.Fatalf("natstest: %v", err)
	}
	tb.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

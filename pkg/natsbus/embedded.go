// Package natsbus holds everything the service does with NATS: the embedded
// server, the connection, the JetStream streams and consumers it creates or
// updates at start, and the command publisher.
package natsbus

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// EmbeddedConfig configures the NATS server that `orderd serve` starts when
// no NATS URL is given.
type EmbeddedConfig struct {
	Addr     string // host:port to listen on; port 0 picks a free one
	StoreDir string // JetStream's file store
	// SyncAlways fsyncs every JetStream write before it is acknowledged, so a
	// PubAck means the command is on disk. Off trades durability against a
	// power loss for speed (see docs/durability.md).
	SyncAlways bool
}

// StartEmbedded starts a NATS server with JetStream and waits until it
// accepts connections. The caller shuts it down with Shutdown and
// WaitForShutdown.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats address %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "orderd-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: cfg.SyncAlways,
		NoSigs:     true,
		NoLog:      true,
		// Commands are small; the limit guards against a hostile publisher.
		MaxPayload: 8 << 20,
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready after 30s")
	}
	return ns, nil
}

package natsbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Stream names.
const (
	CommandStream = "ORDER_CMDS"
	EventStream   = "ORDER_EVENTS"
)

// Connect connects to NATS at url, retrying in the background if the server
// goes away, and logs connection changes and the errors the server sends
// asynchronously (a permissions violation among them). opts add to the
// defaults: credentials and TLS (Security.Options).
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub != nil {
				log.Error("nats error", "subscription", sub.Subject, "err", err)
				return
			}
			log.Error("nats error", "err", err)
		}),
	}, opts...)...)
	if err != nil {
		return nil, fmt.Errorf("connect nats: %w", err)
	}
	return nc, nil
}

// Security is how a process proves to NATS who it is, and checks the
// server, beyond a user and password in the URL (nats://user:pass@host):
// at most one of a credentials file or an nkey seed file, and TLS files.
// Every field is a path; empty ones are not used.
type Security struct {
	// CredsFile is a .creds file: a user JWT and its nkey seed (a server
	// in operator mode, nsc generate creds).
	CredsFile string
	// NKeySeedFile holds a user's nkey seed (nk -gen user); the server's
	// config lists the user's public key.
	NKeySeedFile string
	// TLSCAFile is the CA that signed the server's certificate (PEM). With
	// it the connection requires TLS.
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are a client certificate and its key
	// (PEM), for a server that verifies clients (mutual TLS).
	TLSCertFile, TLSKeyFile string
}

// Options returns the nats.go options of s. It reads the nkey seed and
// checks the CA file at once; nats.go rereads the TLS files at every
// connect, so renewed certificates are picked up on reconnect.
func (s Security) Options() ([]nats.Option, error) {
	var opts []nats.Option
	switch {
	case s.CredsFile != "" && s.NKeySeedFile != "":
		return nil, errors.New("nats: a creds file and an nkey seed file are two identities; give one")
	case s.CredsFile != "":
		opts = append(opts, nats.UserCredentials(s.CredsFile))
	case s.NKeySeedFile != "":
		o, err := nats.NkeyOptionFromSeed(s.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", s.NKeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if s.TLSCAFile != "" {
		opts = append(opts, nats.RootCAs(s.TLSCAFile))
	}
	if (s.TLSCertFile == "") != (s.TLSKeyFile == "") {
		return nil, errors.New("nats: a client certificate needs both its certificate and its key file")
	}
	if s.TLSCertFile != "" {
		opts = append(opts, nats.ClientCert(s.TLSCertFile, s.TLSKeyFile))
	}
	return opts, nil
}

// StreamConfig sets what EnsureStreams creates.
type StreamConfig struct {
	Replicas int // 1 on one server, 3 on a cluster
	// EventMaxAge bounds how long order events are kept for downstream
	// consumers to catch up.
	EventMaxAge time.Duration
}

// CommandStreamConfig is the ORDER_CMDS stream: every partition's commands.
// It is a work queue (a command is removed once its partition acked it), in
// files, with a two-minute window in which a republished command (same
// Nats-Msg-Id) is dropped as a duplicate; beyond it the partition's own
// bookkeeping (processed_commands, the orders primary key) skips it.
//
// Cost: in a work queue an ack deletes the message, and with sync_interval
// always that delete is fsynced like the write was, so one partition's acks
// run at a few thousand messages a second on an ordinary disk. That bounds
// messages, not orders: under load the ingress packs many commands into one
// message (BatchPublisher), and a worker acks a message once for all of
// them.
func CommandStreamConfig(c StreamConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        CommandStream,
		Description: "checkout, reserve, release, restock and cancel commands, one subject per partition",
		Subjects:    []string{"orders.cmd.>"},
		Retention:   jetstream.WorkQueuePolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(c.Replicas, 1),
		Duplicates:  2 * time.Minute,
		MaxMsgSize:  4 << 20,
		Discard:     jetstream.DiscardOld,
	}
}

// EventStreamConfig is the ORDER_EVENTS stream: the CloudEvents downstream
// services consume. Limits retention keeps them for EventMaxAge whoever has
// read them; the dedupe window drops an event the relay republishes after a
// crash (its id is the Nats-Msg-Id).
func EventStreamConfig(c StreamConfig) jetstream.StreamConfig {
	age := c.EventMaxAge
	if age == 0 {
		age = 7 * 24 * time.Hour
	}
	return jetstream.StreamConfig{
		Name:        EventStream,
		Description: "order and stock events (CloudEvents 1.0 JSON)",
		Subjects:    []string{"orders.events.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(c.Replicas, 1),
		Duplicates:  2 * time.Minute,
		MaxAge:      age,
		Discard:     jetstream.DiscardOld,
		// The relay publishes a batch of events as one atomic batch: one
		// fsync per batch (PublishAtomic).
		AllowAtomicPublish: true,
	}
}

// EnsureStreams creates or updates the streams (commands, events, dead
// letters), idempotently.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, c StreamConfig) error {
	for _, sc := range []jetstream.StreamConfig{CommandStreamConfig(c), EventStreamConfig(c), DeadLetterStreamConfig(c)} {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("ensure stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// Unavailable reports whether err means JetStream could not be reached or
// did not answer in time: the caller should answer 503 and retry later.
func Unavailable(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		errors.Is(err, nats.ErrConnectionClosed) ||
		errors.Is(err, nats.ErrDisconnected) ||
		errors.Is(err, nats.ErrConnectionReconnecting) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabled)
}

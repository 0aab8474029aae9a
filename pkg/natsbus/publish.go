package natsbus

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/order"
)

// Publisher publishes commands to their partition's subject (records of
// ingress decisions to order.IngressSubject) and returns once
// JetStream has acknowledged them (with the server's sync_interval: always,
// once they are on disk).
type Publisher struct {
	js jetstream.JetStream
}

// NewPublisher returns a publisher on js.
func NewPublisher(js jetstream.JetStream) *Publisher {
	return &Publisher{js: js}
}

// Publish publishes cmd on its partition's subject with its id as
// Nats-Msg-Id, and waits for the PubAck or ctx. Errors for which Unavailable
// is true mean the command may or may not be stored: the caller retries with
// the same command id.
func (p *Publisher) Publish(ctx context.Context, cmd order.Command) error {
	data, err := order.EncodeEnvelope(cmd)
	if err != nil {
		return fmt.Errorf("encode command: %w", err)
	}
	if _, err := p.js.Publish(ctx, order.SubjectOf(cmd), data, jetstream.WithMsgID(cmd.ID.String()), jetstream.WithExpectStream(CommandStream)); err != nil {
		if Unavailable(err) {
			return fmt.Errorf("%w: %w", order.Errorf(order.EUNAVAILABLE, "the order queue is unavailable, try again"), err)
		}
		return fmt.Errorf("publish command: %w", err)
	}
	return nil
}

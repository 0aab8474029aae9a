package natsbus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/flashsale/orderd/pkg/order"
)

// IngressConsumerName is the durable consumer of the records of orders the
// ingress decided itself (order.IngressSubject).
const IngressConsumerName = "ingress-decisions"

// IngressAckWait is the ack wait of the ingress decisions' consumer. The
// buyer already reads the decision in the status cache; what waits on a
// record that a killed worker held is only its row in PostgreSQL, so it is
// redelivered after a second rather than a partition's AckWait. A worker
// that takes longer to record a batch tells JetStream it is still at work
// (InProgress), and a record applied twice is skipped the second time.
const IngressAckWait = time.Second

// IngressConsumerConfig is the durable pull consumer of order.IngressSubject
// on ORDER_CMDS: the orders the ingress rejected because a SKU was sold out,
// which a worker records (postgres.DB.RecordRejections). Unlike a
// partition's it is not pinned: these records move no stock, so every
// worker process may apply them at once (the orders primary key makes two
// writers of one record conflict, and the retry skips it). Its filter is
// disjoint from every partition's (orders.cmd.<p>), as a work queue
// requires. MaxDeliver is unlimited: a record is never given up (a poison
// one is Term'd by the worker, which records it as a dead letter); a Nak
// chooses its own delay. AckWait is IngressAckWait.
func IngressConsumerConfig(s ConsumerSettings) jetstream.ConsumerConfig {
	s = s.withDefaults()
	return jetstream.ConsumerConfig{
		Name:          IngressConsumerName,
		Durable:       IngressConsumerName,
		Description:   "orders the ingress rejected itself (sold out), recorded by any worker",
		DeliverPolicy: jetstream.DeliverAllPolicy,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       IngressAckWait,
		MaxDeliver:    -1,
		FilterSubject: order.IngressSubject,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		MaxAckPending: max(4*s.BatchSize, 1000),
		MaxWaiting:    512,
	}
}

// EnsureIngressConsumer creates or updates the ingress decisions' consumer
// on ORDER_CMDS, idempotently. The stream must exist (EnsureStreams).
func EnsureIngressConsumer(ctx context.Context, js jetstream.JetStream, s ConsumerSettings) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, CommandStream, IngressConsumerConfig(s))
	if err != nil {
		return nil, fmt.Errorf("ensure consumer %s: %w", IngressConsumerName, err)
	}
	return c, nil
}

package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxAtomicBatch is the most messages nats-server accepts in one atomic
// batch (its default max_batch_size).
const MaxAtomicBatch = 1000

// Message is one message of an atomic batch.
type Message struct {
	Subject string
	Data    []byte
	MsgID   string // Nats-Msg-Id, for JetStream's dedupe
}

// ErrBatchRefused means the server stored none of an atomic batch, for
// example because one of its messages is a duplicate within the dedupe
// window; publishing the messages one by one is then the way on.
var ErrBatchRefused = errors.New("atomic batch refused")

// PublishAtomic publishes msgs (at most MaxAtomicBatch, all to one stream
// that allows atomic publish) as one JetStream atomic batch: all are stored,
// in order, or none. On a stream of one replica with sync_interval always,
// nats-server 2.15 fsyncs the whole batch once, so the relay's events cost
// one fsync per batch instead of one per event. The intermediate messages
// are plain publishes; the last one carries the commit and waits for the
// PubAck.
func PublishAtomic(ctx context.Context, nc *nats.Conn, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	if len(msgs) > MaxAtomicBatch {
		return fmt.Errorf("atomic batch of %d messages: at most %d", len(msgs), MaxAtomicBatch)
	}
	batch := uuid.NewString()
	for i, m := range msgs {
		msg := nats.NewMsg(m.Subject)
		msg.Data = m.Data
		if m.MsgID != "" {
			msg.Header.Set(jetstream.MsgIDHeader, m.MsgID)
		}
		msg.Header.Set("Nats-Batch-Id", batch)
		msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i < len(msgs)-1 {
			if err := nc.PublishMsg(msg); err != nil {
				return fmt.Errorf("atomic batch: %w", err)
			}
			continue
		}
		msg.Header.Set("Nats-Batch-Commit", "1")
		resp, err := nc.RequestMsgWithContext(ctx, msg)
		if err != nil {
			return fmt.Errorf("atomic batch commit: %w", err)
		}
		var ack struct {
			Error *struct {
				Code        int    `json:"code"`
				ErrCode     int    `json:"err_code"`
				Description string `json:"description"`
			} `json:"error"`
			Count int `json:"count"`
		}
		if err := json.Unmarshal(resp.Data, &ack); err != nil {
			return fmt.Errorf("atomic batch commit: undecodable ack: %w", err)
		}
		if ack.Error != nil {
			return fmt.Errorf("%w: %s (%d)", ErrBatchRefused, ack.Error.Description, ack.Error.ErrCode)
		}
		if ack.Count != len(msgs) {
			return fmt.Errorf("%w: the server counted %d of %d messages", ErrBatchRefused, ack.Count, len(msgs))
		}
	}
	return nil
}

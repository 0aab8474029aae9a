package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DeadLetterStream is the stream of command messages that were never
// applied: exhausted their deliveries, terminated as poison, or dropped
// alone from a good message.
const DeadLetterStream = "ORDER_DLQ"

// Headers of a dead letter on ORDER_DLQ.
const (
	DLQReasonHeader     = "Orders-Dlq-Reason"     // max_deliveries, poison_message or poison_command
	DLQDeliveriesHeader = "Orders-Dlq-Deliveries" // deliveries the message had
	DLQStreamSeqHeader  = "Orders-Dlq-Stream-Seq" // its sequence on ORDER_CMDS
	DLQSubjectHeader    = "Orders-Dlq-Subject"    // its subject on ORDER_CMDS
	DLQErrorHeader      = "Orders-Dlq-Error"      // the last error, if known
)

// Advisory subjects of the partition consumers (nats-server's
// JSAdvisoryConsumerMaxDeliveryExceedPre and JSAdvisoryConsumerMsgTerminatedPre).
const (
	MaxDeliveriesAdvisoryPrefix = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"
	TerminatedAdvisoryPrefix    = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED"
)

// DeadLetterQueueGroup is the queue group of the advisory subscribers: one
// worker process handles each advisory.
const DeadLetterQueueGroup = "orderd-dead-letters"

// DeadLetterSubject returns partition p's subject on ORDER_DLQ.
func DeadLetterSubject(p int) string { return "orders.dlq." + strconv.Itoa(p) }

// DeadLetterStreamConfig is the ORDER_DLQ stream: in files, limits
// retention (a dead letter stays after it was read or replayed), kept for
// MaxAge (default 90 days) so that an operator can look at it long after a
// sale. Its dedupe window drops a second copy of one dead message (the
// Nats-Msg-Id "dlq-<stream seq>" or "dlq-cmd-<command id>").
func DeadLetterStreamConfig(c StreamConfig) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        DeadLetterStream,
		Description: "command messages that were never applied, with their original subject, sequence and last error",
		Subjects:    []string{"orders.dlq.>"},
		Retention:   jetstream.LimitsPolicy,
		Storage:     jetstream.FileStorage,
		Replicas:    max(c.Replicas, 1),
		Duplicates:  2 * time.Minute,
		MaxAge:      90 * 24 * time.Hour,
		MaxMsgSize:  8 << 20,
		Discard:     jetstream.DiscardOld,
	}
}

// Advisory is a MAX_DELIVERIES or MSG_TERMINATED advisory of a consumer.
type Advisory struct {
	Type       string `json:"type"`
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
	Reason     string `json:"reason,omitempty"` // the Term reason
	Terminated bool   `json:"-"`                // a MSG_TERMINATED advisory, else MAX_DELIVERIES
}

// SubscribeDeadLetterAdvisories calls fn with every MAX_DELIVERIES and
// MSG_TERMINATED advisory of the ORDER_CMDS consumers, in the queue group
// DeadLetterQueueGroup (each advisory reaches one subscriber). fn runs on
// the subscription's goroutine: it must not block for long. Unsubscribe
// the returned subscriptions to stop.
func SubscribeDeadLetterAdvisories(nc *nats.Conn, fn func(Advisory)) ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for _, prefix := range []string{MaxDeliveriesAdvisoryPrefix, TerminatedAdvisoryPrefix} {
		terminated := prefix == TerminatedAdvisoryPrefix
		sub, err := nc.QueueSubscribe(prefix+"."+CommandStream+".*", DeadLetterQueueGroup, func(m *nats.Msg) {
			var a Advisory
			if err := json.Unmarshal(m.Data, &a); err != nil || a.StreamSeq == 0 {
				return
			}
			a.Terminated = terminated
			fn(a)
		})
		if err != nil {
			for _, s := range subs {
				s.Unsubscribe()
			}
			return nil, fmt.Errorf("subscribe %s: %w", prefix, err)
		}
		subs = append(subs, sub)
	}
	return subs, nil
}

// DeadLetterMsg is a dead command message to copy to ORDER_DLQ.
type DeadLetterMsg struct {
	Partition  int
	Subject    string // its original subject on ORDER_CMDS
	StreamSeq  uint64 // its sequence on ORDER_CMDS (0 for a command dropped alone)
	Payload    []byte
	Reason     string
	Deliveries uint64
	LastError  string
	MsgID      string // the Nats-Msg-Id: "dlq-<seq>" or "dlq-cmd-<command id>"
}

// PublishDeadLetter publishes d on ORDER_DLQ with its headers and waits
// for the ack. A second copy with the same MsgID within two minutes is
// dropped by the stream.
func PublishDeadLetter(ctx context.Context, js jetstream.JetStream, d DeadLetterMsg) error {
	m := nats.NewMsg(DeadLetterSubject(d.Partition))
	m.Data = d.Payload
	m.Header.Set(DLQReasonHeader, d.Reason)
	m.Header.Set(DLQDeliveriesHeader, strconv.FormatUint(d.Deliveries, 10))
	m.Header.Set(DLQStreamSeqHeader, strconv.FormatUint(d.StreamSeq, 10))
	m.Header.Set(DLQSubjectHeader, d.Subject)
	if d.LastError != "" {
		m.Header.Set(DLQErrorHeader, headerValue(d.LastError))
	}
	if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID(d.MsgID), jetstream.WithExpectStream(DeadLetterStream)); err != nil {
		return fmt.Errorf("publish dead letter %s: %w", d.MsgID, err)
	}
	return nil
}

// headerValue makes s fit in one header value: one line, at most 1 KiB.
func headerValue(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
	if len(s) > 1024 {
		s = s[:1024]
	}
	return s
}

// Replay publishes payload on subject of ORDER_CMDS as a new message (a
// fresh delivery count) with msgID as its Nats-Msg-Id, so that replaying
// one dead letter twice within the dedupe window stores it once.
func (p *Publisher) Replay(ctx context.Context, subject string, payload []byte, msgID string) error {
	if !strings.HasPrefix(subject, "orders.cmd.") {
		return fmt.Errorf("replay: %q is not a command subject", subject)
	}
	if _, err := p.js.Publish(ctx, subject, payload, jetstream.WithMsgID(msgID), jetstream.WithExpectStream(CommandStream)); err != nil {
		if Unavailable(err) {
			return unavailable(err)
		}
		return fmt.Errorf("replay: %w", err)
	}
	return nil
}

// CommandMessage returns the message of ORDER_CMDS with stream sequence
// seq, or jetstream.ErrMsgNotFound if it is gone.
func CommandMessage(ctx context.Context, js jetstream.JetStream, seq uint64) (*jetstream.RawStreamMsg, error) {
	st, err := js.Stream(ctx, CommandStream)
	if err != nil {
		return nil, fmt.Errorf("command message %d: %w", seq, err)
	}
	return st.GetMsg(ctx, seq)
}

// DeleteCommandMessage removes message seq from ORDER_CMDS (a work queue
// keeps a message past its max deliveries otherwise). A message already
// gone is no error.
func DeleteCommandMessage(ctx context.Context, js jetstream.JetStream, seq uint64) error {
	st, err := js.Stream(ctx, CommandStream)
	if err != nil {
		return fmt.Errorf("delete command message %d: %w", seq, err)
	}
	if err := st.DeleteMsg(ctx, seq); err != nil && !isMsgGone(err) {
		return fmt.Errorf("delete command message %d: %w", seq, err)
	}
	return nil
}

// isMsgGone reports whether a delete failed because the message is not
// there (any more): the server answers err_code 10057, in text only.
func isMsgGone(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound {
		return true
	}
	return errors.Is(err, jetstream.ErrMsgDeleteUnsuccessful) && strings.Contains(err.Error(), "err_code=10057")
}

package worker

import (
	"errors"
	"time"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// action is what becomes of a batch's messages after an attempt to apply
// them.
type action string

// Actions, from the table below.
const (
	actAck   action = "ack"   // applied (now or before): Ack
	actTerm  action = "term"  // can never be applied: TermWithReason, no redelivery
	actRetry action = "retry" // another writer got in the way: apply the same batch again now
	actSplit action = "split" // a constraint refused one row, which is unknown: apply each message alone
	actNak   action = "nak"   // failed for now: NakWithDelay, or hold at the last delivery
)

// decodeError is a message whose body is not a valid envelope for its
// partition (order.DecodeEnvelope failed): poison.
type decodeError struct{ err error }

func (e *decodeError) Error() string { return "decode command envelope: " + e.err.Error() }
func (e *decodeError) Unwrap() error { return e.err }

// settleTable is the one place that maps an error of the partition loop to
// what happens to the messages. The first row that matches wins.
//
//	error                                         action
//	nil                                           Ack
//	decodeError (malformed, invalid, wrong part.) Term: retrying cannot help (an envelope that
//	                                              parses keeps its valid commands: only the
//	                                              invalid ones are dropped)
//	*postgres.PoisonError (e.g. unknown address)  Term that command's message, apply the rest
//	postgres.ErrBatchConflict                     apply again at once (a second writer during a
//	                                              pin takeover; never a reason to reject a buyer)
//	EINVALID from the database (constraint)       apply each message alone; one that still
//	                                              fails alone is Term'd
//	*postgres.ReopenError (Redis down: the sold-  NakWithDelay, and the partition stays here: only
//	out markers cannot be deleted)                what needs Redis waits. ApplyBatch holds back
//	                                              the commands that need it and applies the rest
//	                                              (BatchResult.Held, held.go), so this row is a
//	                                              safety net
//	EUNAVAILABLE (database down)                  NakWithDelay, and the loop hands the partition
//	                                              to another worker (unpin, pause a pin TTL) in
//	                                              case only this process lost the database; at
//	                                              the last delivery hold the batch and retry
//	                                              (InProgress) rather than lose it
//	anything else (a bug, a timeout)              NakWithDelay; after MaxDeliver the server drops
//	                                              it and advertises a dead letter
var settleTable = []struct {
	name  string
	match func(error) bool
	act   action
}{
	{"applied", func(err error) bool { return err == nil }, actAck},
	{"poison message", func(err error) bool { var d *decodeError; return errors.As(err, &d) }, actTerm},
	{"poison command", func(err error) bool { var p *postgres.PoisonError; return errors.As(err, &p) }, actTerm},
	{"conflict with another writer", func(err error) bool { return errors.Is(err, postgres.ErrBatchConflict) }, actRetry},
	{"constraint violation", func(err error) bool { return order.ErrorCode(err) == order.EINVALID }, actSplit},
	{"sold-out markers unavailable", markersDown, actNak},
	{"database unavailable", func(err error) bool { return order.ErrorCode(err) == order.EUNAVAILABLE }, actNak},
	{"failure", func(error) bool { return true }, actNak},
}

// settleAction returns the action for err and the name of its row.
func settleAction(err error) (action, string) {
	for _, row := range settleTable {
		if row.match(err) {
			return row.act, row.name
		}
	}
	return actNak, "failure"
}

// holdable reports whether err is worth holding a batch for at its last
// delivery: the database is down and will be back. Redis being down is
// not (markersDown): a batch holds back only the commands that need it.
func holdable(err error) bool {
	return order.ErrorCode(err) == order.EUNAVAILABLE && !markersDown(err)
}

// markersDown reports whether err is a failure to delete sold-out markers
// (Redis did not answer), which only the commands that bring a sold-out
// SKU's stock back have to wait for.
func markersDown(err error) bool {
	var re *postgres.ReopenError
	return errors.As(err, &re)
}

// nakDelay is the redelivery delay after the delivered-th failed attempt:
// half a second, doubling, at most 30 seconds.
func nakDelay(delivered uint64) time.Duration {
	d := 500 * time.Millisecond
	for i := uint64(1); i < delivered && d < 30*time.Second; i++ {
		d *= 2
	}
	return min(d, 30*time.Second)
}

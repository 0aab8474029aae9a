// Package envelope is the wire format of the commands that travel through
// JetStream: the body of one message on a partition's subject (or on the
// ingress decisions' subject) is an envelope of one or more commands, so
// that one fsync carries many orders.
//
// The format is binary, compact and decoded once: a three-byte header
// ("OC" and the version), the number of commands, then each command's
// fields in a fixed order, integers as varints, ids as their 16 bytes,
// strings and lists prefixed by their length. Every length is bounded
// before anything is allocated, so a hostile message costs no more memory
// than its own size. Envelopes written before this format (JSON objects)
// still decode, so that a stream holding commands of an earlier release is
// drained after an upgrade.
//
//	envelope := "O" "C" version=1 uvarint(n) command{n}
//	command  := id[16] kind[1] uvarint(partition) varint(at, unix ns; 0 = none) body
//	checkout := order[16] str(number) str(user) address[16] str(payment)
//	            lines varint(shipping) str(idempotency_key) str(request_hash)
//	            from_cart[1] prices
//	reserve  := order[16] str(user) uvarint(home) lines prices
//	release  := order[16] str(reason)
//	restock  := sku[16] varint(quantity)
//	cancel   := order[16] str(user)
//	rejection:= checkout str(reason) uvarint(n) sku[16]{n} varint(decided_at)
//	lines    := uvarint(n) (sku[16] varint(quantity)){n}
//	prices   := uvarint(n) (sku[16] varint(price)){n}, in SKU id order
//	str      := uvarint(len) bytes
package envelope

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// version is the format this package writes.
const version = 1

// magic starts every binary envelope.
var magic = [2]byte{'O', 'C'}

// MaxCommands bounds the commands in one envelope.
const MaxCommands = order.MaxEnvelopeCommands

// maxString bounds every string field: the longest the ingress accepts is
// an Idempotency-Key of 255 bytes, a user id of 128.
const maxString = 1024

// Command kinds on the wire.
var kindCodes = map[order.Kind]byte{
	order.KindCheckout:        1,
	order.KindReserve:         2,
	order.KindRelease:         3,
	order.KindRestock:         4,
	order.KindCancel:          5,
	order.KindRecordRejection: 6,
}

var kindOf = func() map[byte]order.Kind {
	m := make(map[byte]order.Kind, len(kindCodes))
	for k, c := range kindCodes {
		m[c] = k
	}
	return m
}()

// Encode encodes cmds as one envelope. It fails only for a command whose
// kind or body this format cannot carry (a bug of the caller).
func Encode(cmds ...order.Command) ([]byte, error) {
	buf := AppendHeader(make([]byte, 0, 160*len(cmds)+8), len(cmds))
	for i := range cmds {
		var err error
		if buf, err = AppendCommand(buf, &cmds[i]); err != nil {
			return nil, err
		}
	}
	return buf, nil
}

// AppendHeader appends the header of an envelope of n commands to dst; the
// n encoded commands (AppendCommand) follow it. A publisher that packs
// commands encoded one by one builds its message this way.
func AppendHeader(dst []byte, n int) []byte {
	dst = append(dst, magic[0], magic[1], version)
	return binary.AppendUvarint(dst, uint64(n))
}

// AppendCommand appends the encoding of c to dst.
func AppendCommand(dst []byte, c *order.Command) ([]byte, error) {
	code, ok := kindCodes[c.Kind]
	if !ok {
		return nil, fmt.Errorf("encode command %s: unknown kind %q", c.ID, c.Kind)
	}
	dst = append(dst, c.ID[:]...)
	dst = append(dst, code)
	dst = binary.AppendUvarint(dst, uint64(max(c.Partition, 0)))
	dst = appendTime(dst, c.At)
	switch c.Kind {
	case order.KindCheckout:
		if c.Checkout == nil {
			return nil, fmt.Errorf("encode command %s: no checkout", c.ID)
		}
		dst = appendCheckout(dst, c.Checkout)
	case order.KindReserve:
		r := c.Reserve
		if r == nil {
			return nil, fmt.Errorf("encode command %s: no reserve", c.ID)
		}
		dst = append(dst, r.OrderID[:]...)
		dst = appendString(dst, r.UserID)
		dst = binary.AppendUvarint(dst, uint64(max(r.Home, 0)))
		dst = appendLines(dst, r.Lines)
		dst = appendPrices(dst, r.Prices)
	case order.KindRelease:
		if c.Release == nil {
			return nil, fmt.Errorf("encode command %s: no release", c.ID)
		}
		dst = append(dst, c.Release.OrderID[:]...)
		dst = appendString(dst, c.Release.Reason)
	case order.KindRestock:
		if c.Restock == nil {
			return nil, fmt.Errorf("encode command %s: no restock", c.ID)
		}
		dst = append(dst, c.Restock.SKUID[:]...)
		dst = binary.AppendVarint(dst, c.Restock.Quantity)
	case order.KindCancel:
		if c.Cancel == nil {
			return nil, fmt.Errorf("encode command %s: no cancel", c.ID)
		}
		dst = append(dst, c.Cancel.OrderID[:]...)
		dst = appendString(dst, c.Cancel.UserID)
	case order.KindRecordRejection:
		r := c.Rejection
		if r == nil {
			return nil, fmt.Errorf("encode command %s: no rejection", c.ID)
		}
		dst = appendCheckout(dst, &r.Checkout)
		dst = appendString(dst, string(r.Reason))
		dst = binary.AppendUvarint(dst, uint64(len(r.SKUs)))
		for _, id := range r.SKUs {
			dst = append(dst, id[:]...)
		}
		dst = appendTime(dst, r.DecidedAt)
	}
	return dst, nil
}

func appendCheckout(dst []byte, k *order.Checkout) []byte {
	dst = append(dst, k.OrderID[:]...)
	dst = appendString(dst, k.OrderNumber)
	dst = appendString(dst, k.UserID)
	dst = append(dst, k.AddressID[:]...)
	dst = appendString(dst, string(k.PaymentMethod))
	dst = appendLines(dst, k.Lines)
	dst = binary.AppendVarint(dst, k.ShippingFee)
	dst = appendString(dst, k.IdempotencyKey)
	dst = appendString(dst, k.RequestHash)
	fromCart := byte(0)
	if k.FromCart {
		fromCart = 1
	}
	dst = append(dst, fromCart)
	return appendPrices(dst, k.Prices)
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendTime(dst []byte, t time.Time) []byte {
	if t.IsZero() {
		return binary.AppendVarint(dst, 0)
	}
	return binary.AppendVarint(dst, t.UnixNano())
}

func appendLines(dst []byte, lines []order.LineRequest) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(lines)))
	for _, l := range lines {
		dst = append(dst, l.SKUID[:]...)
		dst = binary.AppendVarint(dst, l.Quantity)
	}
	return dst
}

func appendPrices(dst []byte, prices map[uuid.UUID]int64) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(prices)))
	ids := make([]uuid.UUID, 0, len(prices))
	for id := range prices {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, func(a, b uuid.UUID) int { return bytes.Compare(a[:], b[:]) })
	for _, id := range ids {
		dst = append(dst, id[:]...)
		dst = binary.AppendVarint(dst, prices[id])
	}
	return dst
}

// Decode parses an envelope without checking its commands against a
// partition: what a salvage of a partly invalid message starts from. It
// returns an EMALFORMED error if data is not an envelope of 1 to
// MaxCommands commands.
func Decode(data []byte) ([]order.Command, error) {
	if len(data) > 0 && data[0] == '{' {
		return decodeJSON(data)
	}
	r := reader{buf: data}
	if len(data) < 3 || data[0] != magic[0] || data[1] != magic[1] {
		return nil, malformed("not a command envelope")
	}
	if data[2] != version {
		return nil, malformed(fmt.Sprintf("envelope version %d, this release reads %d", data[2], version))
	}
	r.off = 3
	n := r.count(MaxCommands)
	if r.err == nil && n == 0 {
		r.fail("no commands")
	}
	// Each command takes at least 19 bytes: no hostile count allocates
	// more than the message's size.
	if r.err == nil && n > uint64(len(data))/19+1 {
		r.fail("more commands than bytes")
	}
	if r.err != nil {
		return nil, r.err
	}
	cmds := make([]order.Command, n)
	for i := range cmds {
		r.command(&cmds[i])
		if r.err != nil {
			return nil, fmt.Errorf("command %d: %w", i, r.err)
		}
	}
	if r.off != len(data) {
		return nil, malformed("trailing data")
	}
	return cmds, nil
}

// decodeJSON reads an envelope of the JSON format of earlier releases:
// strict, no unknown fields, no trailing data.
func decodeJSON(data []byte) ([]order.Command, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var env order.Envelope
	if err := dec.Decode(&env); err != nil {
		return nil, malformed(err.Error())
	}
	if dec.More() {
		return nil, malformed("trailing data")
	}
	if len(env.Commands) == 0 || len(env.Commands) > MaxCommands {
		return nil, malformed(fmt.Sprintf("envelope holds %d commands", len(env.Commands)))
	}
	return env.Commands, nil
}

// ForPartition decodes and validates a message body of partition p of n.
// Every error is EMALFORMED or EINVALID: the message is poison and
// retrying it cannot help.
func ForPartition(data []byte, p, n int) ([]order.Command, error) {
	return decodeValid(data, func(c *order.Command) error {
		if c.Kind == order.KindRecordRejection {
			return order.Errorf(order.EINVALID, "a %s command on partition %d's subject", order.KindRecordRejection, p)
		}
		return c.Validate(p, n)
	})
}

// ForIngress decodes and validates a message body of the ingress
// decisions' subject for n partitions: every command must be a
// KindRecordRejection.
func ForIngress(data []byte, n int) ([]order.Command, error) {
	return decodeValid(data, func(c *order.Command) error {
		if c.Kind != order.KindRecordRejection {
			return order.Errorf(order.EINVALID, "a %s command on the ingress decisions' subject", c.Kind)
		}
		return c.Validate(c.Partition, n)
	})
}

func decodeValid(data []byte, valid func(*order.Command) error) ([]order.Command, error) {
	cmds, err := Decode(data)
	if err != nil {
		return nil, err
	}
	for i := range cmds {
		if err := valid(&cmds[i]); err != nil {
			return nil, fmt.Errorf("command %d: %w", i, err)
		}
	}
	return cmds, nil
}

func malformed(why string) error { return order.Errorf(order.EMALFORMED, "command envelope: %s", why) }

// reader decodes one envelope; the first error sticks and every later read
// returns zero values.
type reader struct {
	buf []byte
	off int
	err error
}

func (r *reader) fail(why string) {
	if r.err == nil {
		r.err = malformed(why)
	}
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.buf[r.off:])
	if n <= 0 {
		r.fail("bad unsigned integer")
		return 0
	}
	r.off += n
	return v
}

func (r *reader) varint() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.buf[r.off:])
	if n <= 0 {
		r.fail("bad integer")
		return 0
	}
	r.off += n
	return v
}

// count reads a length of at most limit.
func (r *reader) count(limit uint64) uint64 {
	n := r.uvarint()
	if n > limit {
		r.fail(fmt.Sprintf("length %d over %d", n, limit))
		return 0
	}
	return n
}

func (r *reader) int() int {
	v := r.uvarint()
	if v > 1<<31-1 {
		r.fail("integer out of range")
		return 0
	}
	return int(v)
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.buf) {
		r.fail("truncated")
		return 0
	}
	b := r.buf[r.off]
	r.off++
	return b
}

func (r *reader) bool() bool {
	switch r.byte() {
	case 0:
		return false
	case 1:
		return true
	}
	r.fail("bad boolean")
	return false
}

func (r *reader) uuid() uuid.UUID {
	var id uuid.UUID
	if r.err != nil {
		return id
	}
	if len(r.buf)-r.off < 16 {
		r.fail("truncated")
		return id
	}
	copy(id[:], r.buf[r.off:])
	r.off += 16
	return id
}

func (r *reader) string() string {
	n := r.count(maxString)
	if r.err != nil {
		return ""
	}
	if uint64(len(r.buf)-r.off) < n {
		r.fail("truncated")
		return ""
	}
	s := string(r.buf[r.off : r.off+int(n)])
	r.off += int(n)
	return s
}

func (r *reader) time() time.Time {
	ns := r.varint()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

func (r *reader) lines() []order.LineRequest {
	n := r.count(order.MaxLines)
	if r.err != nil || n == 0 {
		return nil
	}
	lines := make([]order.LineRequest, n)
	for i := range lines {
		lines[i] = order.LineRequest{SKUID: r.uuid(), Quantity: r.varint()}
	}
	return lines
}

func (r *reader) prices() map[uuid.UUID]int64 {
	n := r.count(order.MaxLines)
	if r.err != nil || n == 0 {
		return nil
	}
	prices := make(map[uuid.UUID]int64, n)
	for range n {
		id := r.uuid()
		if _, dup := prices[id]; dup && r.err == nil {
			r.fail("a SKU priced twice")
		}
		prices[id] = r.varint()
	}
	return prices
}

func (r *reader) checkout(k *order.Checkout) {
	k.OrderID = r.uuid()
	k.OrderNumber = r.string()
	k.UserID = r.string()
	k.AddressID = r.uuid()
	k.PaymentMethod = order.PaymentMethod(r.string())
	k.Lines = r.lines()
	k.ShippingFee = r.varint()
	k.IdempotencyKey = r.string()
	k.RequestHash = r.string()
	k.FromCart = r.bool()
	k.Prices = r.prices()
}

func (r *reader) command(c *order.Command) {
	c.ID = r.uuid()
	code := r.byte()
	kind, ok := kindOf[code]
	if !ok && r.err == nil {
		r.fail(fmt.Sprintf("unknown command kind %d", code))
	}
	c.Kind = kind
	c.Partition = r.int()
	c.At = r.time()
	switch kind {
	case order.KindCheckout:
		c.Checkout = new(order.Checkout)
		r.checkout(c.Checkout)
	case order.KindReserve:
		c.Reserve = &order.Reserve{OrderID: r.uuid(), UserID: r.string(), Home: r.int(), Lines: r.lines(), Prices: r.prices()}
	case order.KindRelease:
		c.Release = &order.Release{OrderID: r.uuid(), Reason: r.string()}
	case order.KindRestock:
		c.Restock = &order.Restock{SKUID: r.uuid(), Quantity: r.varint()}
	case order.KindCancel:
		c.Cancel = &order.Cancel{OrderID: r.uuid(), UserID: r.string()}
	case order.KindRecordRejection:
		rej := new(order.Rejection)
		r.checkout(&rej.Checkout)
		rej.Reason = order.RejectReason(r.string())
		if n := r.count(order.MaxLines); r.err == nil && n > 0 {
			rej.SKUs = make([]uuid.UUID, n)
			for i := range rej.SKUs {
				rej.SKUs[i] = r.uuid()
			}
		}
		rej.DecidedAt = r.time()
		c.Rejection = rej
	}
}

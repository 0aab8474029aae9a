package order

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// OrderCursor is a position in a user's order list, which runs newest first
// by (AcceptedAt, ID) descending: keyset pagination, stable while orders are
// added. Clients see it only as an opaque string (String).
type OrderCursor struct {
	AcceptedAt time.Time
	ID         uuid.UUID
}

// CursorOf returns the cursor that continues a list after o.
func CursorOf(o *Order) OrderCursor { return OrderCursor{AcceptedAt: o.AcceptedAt, ID: o.ID} }

// String encodes c as an opaque, URL-safe token.
func (c OrderCursor) String() string {
	raw := strconv.FormatInt(c.AcceptedAt.UnixMicro(), 10) + "." + c.ID.String()
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// Before reports whether o comes after the cursor in the list, that is, is
// older: (o.AcceptedAt, o.ID) < (c.AcceptedAt, c.ID). Times compare at
// microsecond precision, PostgreSQL's.
func (c OrderCursor) Before(o *Order) bool {
	ot, ct := o.AcceptedAt.UnixMicro(), c.AcceptedAt.UnixMicro()
	if ot != ct {
		return ot < ct
	}
	return strings.Compare(o.ID.String(), c.ID.String()) < 0
}

// ParseOrderCursor decodes a token made by String. Anything else is an
// EINVALID error on the field "cursor".
func ParseOrderCursor(s string) (OrderCursor, error) {
	bad := Invalid("invalid cursor", FieldError{Field: "cursor", Detail: "is not a cursor this service returned"})
	if len(s) > 128 {
		return OrderCursor{}, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return OrderCursor{}, bad
	}
	micros, id, ok := strings.Cut(string(raw), ".")
	if !ok || len(id) != 36 {
		return OrderCursor{}, bad
	}
	us, err := strconv.ParseInt(micros, 10, 64)
	if err != nil || us < 0 {
		return OrderCursor{}, bad
	}
	u, err := uuid.Parse(id)
	if err != nil {
		return OrderCursor{}, bad
	}
	return OrderCursor{AcceptedAt: time.UnixMicro(us).UTC(), ID: u}, nil
}

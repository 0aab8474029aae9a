package order

import (
	"errors"
	"fmt"
)

// Code classifies an Error. The ingress maps each code to one HTTP status in a
// single table; the worker maps errors to Ack, Nak or Term in another.
type Code string

// Error codes.
const (
	EINVALID      Code = "invalid"      // the request is well formed but its values are not acceptable (422)
	EMALFORMED    Code = "malformed"    // the request cannot be decoded (400)
	ENOTFOUND     Code = "not_found"    // the resource does not exist or is not the caller's (404)
	ECONFLICT     Code = "conflict"     // the resource is in a state that forbids the action (409)
	EPAUSED       Code = "sale_paused"  // the sale of a SKU is paused (409)
	EUNAUTHORIZED Code = "unauthorized" // missing or invalid credentials (401)
	EFORBIDDEN    Code = "forbidden"    // valid credentials without the right (403)
	ETOOLARGE     Code = "too_large"    // the request body is too large (413)
	ERATELIMIT    Code = "rate_limited" // the caller sends too much (429)
	EUNAVAILABLE  Code = "unavailable"  // a dependency is down or slow; retry later (503)
	EINTERNAL     Code = "internal"     // a bug or an unexpected failure (500)
	EUNSUPPORTED  Code = "unsupported"  // the media type is not JSON (415)
	EMETHOD       Code = "not_allowed"  // the method is not allowed on the route (405)
)

// FieldError names one invalid field of a request and says what is wrong.
type FieldError struct {
	Field  string `json:"field"`
	Detail string `json:"detail"`
}

// Error is the domain's error: a code, a message safe to show to the caller,
// and optionally the fields at fault.
type Error struct {
	Code    Code
	Message string
	Fields  []FieldError
}

// Error implements error.
func (e *Error) Error() string {
	if len(e.Fields) > 0 {
		return fmt.Sprintf("%s: %s (%s: %s)", e.Code, e.Message, e.Fields[0].Field, e.Fields[0].Detail)
	}
	return fmt.Sprintf("%s: %s", e.Code, e.Message)
}

// Errorf returns an Error with the code and a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an EINVALID error naming the fields at fault.
func Invalid(message string, fields ...FieldError) *Error {
	return &Error{Code: EINVALID, Message: message, Fields: fields}
}

// ErrorCode returns the code of the first *Error in err's chain, EINTERNAL for
// any other non-nil error, and "" for nil.
func ErrorCode(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return ""
	case errors.As(err, &e):
		return e.Code
	default:
		return EINTERNAL
	}
}

// ErrorMessage returns the caller-safe message of the first *Error in err's
// chain, or a generic message for any other error.
func ErrorMessage(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}

// ErrorFields returns the field errors of the first *Error in err's chain.
func ErrorFields(err error) []FieldError {
	var e *Error
	if errors.As(err, &e) {
		return e.Fields
	}
	return nil
}

// Fields collects field errors while a request is validated.
type Fields []FieldError

// Add records that field is invalid.
func (f *Fields) Add(field, format string, args ...any) {
	*f = append(*f, FieldError{Field: field, Detail: fmt.Sprintf(format, args...)})
}

// Err returns an EINVALID error with the collected fields, or nil if none.
func (f Fields) Err(message string) error {
	if len(f) == 0 {
		return nil
	}
	return Invalid(message, f...)
}

package ingress

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"strings"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// MaxBodyBytes bounds every request body (64 KiB).
const MaxBodyBytes = 64 << 10

// decodeJSON reads r's body into v strictly: one JSON value of at most
// MaxBodyBytes, no unknown fields, nothing after it. Syntax errors, unknown
// fields and trailing data are EMALFORMED (400); a value of the wrong type is
// EINVALID (422) naming the field; an oversized body is ETOOLARGE (413); a
// content type other than JSON is EUNSUPPORTED (415).
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return order.Errorf(order.EUNSUPPORTED, "send the body as application/json")
		}
	}
	body := http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	return decodeStrict(body, v)
}

// decodeStrict is decodeJSON's core, without HTTP, for fuzzing.
func decodeStrict(body io.Reader, v any) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return decodeError(err)
		}
		return order.Errorf(order.EMALFORMED, "the body holds data after its JSON value")
	}
	return nil
}

func decodeError(err error) error {
	var (
		syn *json.SyntaxError
		typ *json.UnmarshalTypeError
		mbe *http.MaxBytesError
	)
	switch {
	case errors.As(err, &mbe):
		return order.Errorf(order.ETOOLARGE, "the body is larger than %d bytes", MaxBodyBytes)
	case errors.Is(err, io.EOF):
		return order.Errorf(order.EMALFORMED, "the body is empty: send a JSON object")
	case errors.As(err, &syn), errors.Is(err, io.ErrUnexpectedEOF):
		return order.Errorf(order.EMALFORMED, "the body is not valid JSON: %v", err)
	case errors.As(err, &typ):
		field := typ.Field
		if field == "" {
			return order.Errorf(order.EMALFORMED, "the body must be a JSON object")
		}
		return order.Invalid("a field has the wrong type", order.FieldError{Field: field, Detail: fmt.Sprintf("must be %s", jsonKind(typ.Type.String()))})
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return order.Errorf(order.EMALFORMED, "%s", strings.TrimPrefix(err.Error(), "json: "))
	}
	var ve *order.Error
	if errors.As(err, &ve) {
		return ve
	}
	var ne net.Error
	if errors.As(err, &ne) {
		// The body stopped arriving (the server's read timeout): say so
		// without the connection's addresses.
		return order.Errorf(order.EMALFORMED, "the body did not arrive in time")
	}
	// A value's own decoder refused it (a bad UUID or time, for example).
	return order.Invalid("a field has an invalid value", order.FieldError{Field: "body", Detail: err.Error()})
}

func jsonKind(goType string) string {
	switch {
	case strings.Contains(goType, "int"):
		return "an integer"
	case strings.Contains(goType, "float"):
		return "a number"
	case goType == "string", strings.Contains(goType, "UUID"):
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	}
	return "an object"
}

// pathUUID parses the path parameter name as a UUID. An invalid id is
// ENOTFOUND: no resource has it.
func pathUUID(r *http.Request, name string) (uuid.UUID, error) {
	raw := r.PathValue(name)
	id, err := uuid.Parse(raw)
	if err != nil || len(raw) != 36 {
		return uuid.Nil, order.Errorf(order.ENOTFOUND, "no %s %q", strings.TrimSuffix(name, "_id"), truncate(raw, 64))
	}
	return id, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

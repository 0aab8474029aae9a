package ingress

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/flashsale/orderd/pkg/order"
)

// problem is an RFC 9457 problem detail.
type problem struct {
	Type     string             `json:"type"`
	Title    string             `json:"title"`
	Status   int                `json:"status"`
	Detail   string             `json:"detail,omitempty"`
	Instance string             `json:"instance,omitempty"`
	Errors   []order.FieldError `json:"errors,omitempty"`
}

// statusOf is the one table from domain error codes to HTTP status and
// problem title. Every error a handler returns goes through it.
var statusOf = map[order.Code]struct {
	status int
	title  string
}{
	order.EMALFORMED:    {http.StatusBadRequest, "Malformed request"},
	order.EUNAUTHORIZED: {http.StatusUnauthorized, "Unauthorized"},
	order.EFORBIDDEN:    {http.StatusForbidden, "Forbidden"},
	order.ENOTFOUND:     {http.StatusNotFound, "Not found"},
	order.EMETHOD:       {http.StatusMethodNotAllowed, "Method not allowed"},
	order.ECONFLICT:     {http.StatusConflict, "Conflict"},
	order.EPAUSED:       {http.StatusConflict, "Sale paused"},
	order.ETOOLARGE:     {http.StatusRequestEntityTooLarge, "Request body too large"},
	order.EUNSUPPORTED:  {http.StatusUnsupportedMediaType, "Unsupported media type"},
	order.EINVALID:      {http.StatusUnprocessableEntity, "Invalid request"},
	order.ERATELIMIT:    {http.StatusTooManyRequests, "Too many requests"},
	order.EUNAVAILABLE:  {http.StatusServiceUnavailable, "Service unavailable"},
	order.EINTERNAL:     {http.StatusInternalServerError, "Internal error"},
}

// problemType returns the problem type URI of a code: /problems/<code> with
// dashes, for example /problems/sale-paused.
func problemType(c order.Code) string {
	return "/problems/" + strings.ReplaceAll(string(c), "_", "-")
}

// writeError answers err as a problem. Only internal errors are logged with
// their cause; their detail is never shown to the client.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		// The client went away: nobody reads the answer, and nothing failed.
		s.log.DebugContext(r.Context(), "client gone", "method", r.Method, "path", r.URL.Path)
		w.WriteHeader(499)
		return
	}
	code := order.ErrorCode(err)
	st, ok := statusOf[code]
	if !ok {
		code, st = order.EINTERNAL, statusOf[order.EINTERNAL]
	}
	p := problem{
		Type:     problemType(code),
		Title:    st.title,
		Status:   st.status,
		Detail:   order.ErrorMessage(err),
		Instance: r.URL.Path,
		Errors:   order.ErrorFields(err),
	}
	switch code {
	case order.EINTERNAL:
		s.log.ErrorContext(r.Context(), "internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	case order.EUNAVAILABLE:
		s.log.WarnContext(r.Context(), "dependency unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		w.Header().Set("Retry-After", "1")
	case order.ERATELIMIT:
		w.Header().Set("Retry-After", "1")
	}
	var ra *retryAfter
	if errors.As(err, &ra) {
		w.Header().Set("Retry-After", strconv.Itoa(ra.seconds))
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	if err := json.NewEncoder(w).Encode(p); err != nil {
		s.log.DebugContext(r.Context(), "write problem", "err", err)
	}
}

// retryAfter decorates an error with a Retry-After in seconds.
type retryAfter struct {
	err     error
	seconds int
}

func (e *retryAfter) Error() string { return e.err.Error() }
func (e *retryAfter) Unwrap() error { return e.err }

// withRetryAfter asks the client to come back after seconds.
func withRetryAfter(err error, seconds int) error { return &retryAfter{err, seconds} }

// writeJSON answers v as JSON with status.
// The value is encoded before anything is written, so that a value that
// cannot be encoded is a 500 rather than an empty success.
func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		slog.Error("encode response", "err", err)
		status, data = http.StatusInternalServerError, []byte(`{"type":"/problems/internal","title":"Internal error","status":500}`)
		w.Header().Set("Content-Type", "application/problem+json")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	if _, err := w.Write(append(data, '\n')); err != nil {
		slog.Debug("write response", "err", err)
	}
}

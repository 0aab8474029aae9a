package ingress

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/flashsale/orderd/pkg/order"
)

// SignatureHeader carries the payment provider's signature of a webhook.
const SignatureHeader = "Payment-Signature"

// SignatureTolerance is how far a signature's timestamp may be from now,
// either way, before the webhook is refused (a replayed or stale request).
const SignatureTolerance = 5 * time.Minute

// PaymentStore records payments (pkg/postgres).
type PaymentStore interface {
	// PayOrder marks a confirmed order paid and returns it, and whether
	// this call paid it (false: the same provider_ref paid it before).
	// Errors: ENOTFOUND, EINVALID (amount or currency do not match),
	// ECONFLICT (not payable: pending, expired, cancelled, rejected, paid
	// under another provider_ref, or its hold ended; a valid payment of an
	// order that will never be payable again is recorded as an
	// order.payment_refused event), EUNAVAILABLE.
	PayOrder(ctx context.Context, p *order.Payment) (*order.Order, bool, error)
}

// paymentResult is the answer to a payment webhook.
type paymentResult struct {
	OrderID     string       `json:"order_id"`
	Status      order.Status `json:"status"`
	PaidAt      *time.Time   `json:"paid_at"`
	ProviderRef string       `json:"provider_ref"`
	Duplicate   bool         `json:"duplicate"` // this provider_ref was seen before: nothing changed
}

// paymentRoutes registers the payment provider's webhook. It takes no JWT:
// the request is signed instead.
func (s *Server) paymentRoutes() {
	s.handle("POST /v1/payments/webhook", s.paymentWebhook)
}

// Sign returns the Payment-Signature header value for body at t with
// secret: "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">" (the
// scheme of Stripe's webhooks). orderd pay and the tests sign with it.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(signature(secret, ts, body))
}

func signature(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// verifySignature checks header, a Payment-Signature, against body: its one
// t= must be within SignatureTolerance of now, and one of its v1= entries
// must be the HMAC of "<t>.<body>" (compared in constant time). Any failure
// is EUNAUTHORIZED.
func verifySignature(secret []byte, header string, body []byte, now time.Time) error {
	bad := func(why string) error { return order.Errorf(order.EUNAUTHORIZED, "%s %s", SignatureHeader, why) }
	if header == "" {
		return bad("is missing")
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			if ts != "" {
				return bad("holds more than one t=")
			}
			ts = v
		case "v1":
			if sig, err := hex.DecodeString(v); err == nil && len(sig) == sha256.Size {
				sigs = append(sigs, sig)
			}
		}
	}
	if ts == "" || len(sigs) == 0 {
		return bad("needs t= and v1=")
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return bad("has an invalid t=")
	}
	if d := now.Sub(time.Unix(secs, 0)); d > SignatureTolerance || d < -SignatureTolerance {
		return bad("is too old or too far in the future")
	}
	want := signature(secret, ts, body)
	ok := false
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			ok = true // no early exit: every entry is compared
		}
	}
	if !ok {
		return bad("does not match the body")
	}
	return nil
}

// paymentWebhook is POST /v1/payments/webhook (SPEC 3.3), called by the
// payment provider. The raw body (at most MaxBodyBytes) is read first, its
// signature verified (401), then decoded strictly (400): {order_id, amount,
// currency, provider_ref}. A confirmed order whose grand total and currency
// match becomes paid (200), in PostgreSQL with its order.paid event, then in
// the status cache with a status note; the same provider_ref again is 200
// with no further effect. An unknown order is 404, a mismatch 422, an order
// that is pending or no longer payable 409 (SPEC 3.3: expired, cancelled,
// rejected, paid under another provider_ref, or confirmed with its hold
// ended before the expiry sweep ran; the store writes an
// order.payment_refused event for each such valid payment, so that the
// shop refunds it, and changes nothing else). Without a webhook secret the
// route answers 503.
func (s *Server) paymentWebhook(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.WebhookSecret == "" || s.Payments == nil {
		return order.Errorf(order.EUNAVAILABLE, "payments not configured")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return order.Errorf(order.EUNSUPPORTED, "send the body as application/json")
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return order.Errorf(order.ETOOLARGE, "the body is larger than %d bytes", MaxBodyBytes)
		}
		return order.Errorf(order.EMALFORMED, "the body could not be read")
	}
	if err := verifySignature([]byte(s.cfg.WebhookSecret), r.Header.Get(SignatureHeader), body, time.Now()); err != nil {
		return err
	}
	var p order.Payment
	if err := decodeStrict(bytes.NewReader(body), &p); err != nil {
		if order.ErrorCode(err) == order.EINVALID {
			// A field of the wrong type: the provider's body is malformed.
			return &order.Error{Code: order.EMALFORMED, Message: order.ErrorMessage(err), Fields: order.ErrorFields(err)}
		}
		return err
	}
	if err := p.Validate(); err != nil {
		return &order.Error{Code: order.EMALFORMED, Message: "malformed payment", Fields: order.ErrorFields(err)}
	}
	ctx := r.Context()
	o, paid, err := s.Payments.PayOrder(ctx, &p)
	if err != nil {
		return err
	}
	// Committed: the cache and the note are best effort (the order.paid
	// event follows through the outbox), and are written again on a retry.
	cctx := context.WithoutCancel(ctx)
	if c, ok := s.Status.(interface {
		PutOrders(context.Context, ...*order.Order) error
	}); ok {
		if err := c.PutOrders(cctx, o); err != nil {
			s.log.WarnContext(ctx, "payment: status cache not updated", "order", o.ID, "err", err)
		}
	}
	if paid && s.Notify != nil {
		if err := s.Notify([]*order.Order{o}); err != nil {
			s.log.DebugContext(ctx, "payment: status note not sent", "order", o.ID, "err", err)
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, paymentResult{OrderID: o.ID.String(), Status: o.Status, PaidAt: o.PaidAt, ProviderRef: p.ProviderRef, Duplicate: !paid})
	return nil
}

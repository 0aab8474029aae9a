// Command benchlimits serves the ceilings the checkout pipeline sits on, for
// make bench-limits.
//
//	benchlimits http [--addr 127.0.0.1:8079] [--jwt-secret S]
//
// serves POST /v1/orders as the ingress does it without NATS, Redis or
// PostgreSQL: the same JWT check (pkg/auth Verifier), the same strict JSON
// decode of the checkout body (64 KiB at most, no unknown fields, nothing
// after the value), the same shape checks, Idempotency-Key check and body
// hash, then 202 with the order id, number and links. Driven by
// `flashbench raw-accept`, it is the rate of the HTTP front alone on this
// machine: the bare-HTTP ceiling of the accept rate. For flashbench's setup
// it also answers POST /v1/skus and POST /v1/addresses with 201 and a fresh
// id (nothing is stored), and GET /healthz and /readyz with 200.
//
//	benchlimits durability [--settings r1-always,r1-lazy,r3-always,r3-lazy] [--runs 3] ...
//
// measures JetStream durable command writes as the ingress issues them
// (BatchPublisher) for each durability setting: one server or a three-node
// cluster (R3), sync_interval always or the server's lazy default; for make
// bench-durability (docs/durability.md).
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
)

const usage = `Usage:
  benchlimits http [--addr ADDR] [--jwt-secret SECRET]
  benchlimits durability [--settings ...] [--batch 1,256] [--runs 3] ... (--help)

http: a bare POST /v1/orders (JWT check, strict JSON decode, 202) without
NATS, Redis or PostgreSQL, for flashbench raw-accept. JWT_SECRET stands in for
--jwt-secret.

durability: JetStream durable command writes per second for R1 and R3,
sync_interval always and lazy (see benchlimits durability --help).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var code int
	if len(os.Args) > 1 && os.Args[1] == "durability" {
		code = runDurability(ctx, os.Args[2:], os.Stdout, os.Stderr)
	} else {
		code = run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	}
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "http" {
		fmt.Fprint(stderr, usage)
		return 2
	}
	fs := flag.NewFlagSet("benchlimits http", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:8079", "address to listen on")
	secret := fs.String("jwt-secret", "", "HS256 secret of the tokens (env JWT_SECRET)")
	if err := fs.Parse(args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *secret == "" {
		*secret = getenv("JWT_SECRET")
	}
	if *secret == "" {
		fmt.Fprintln(stderr, "benchlimits: --jwt-secret (or JWT_SECRET) is required")
		return 2
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintf(stderr, "benchlimits: %v\n", err)
		return 1
	}
	srv := &http.Server{Handler: newBareHandler([]byte(*secret)), ReadHeaderTimeout: 10 * time.Second}
	slog.New(slog.NewTextHandler(stderr, nil)).Info("benchlimits http listening", "addr", ln.Addr().String())
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintf(stderr, "benchlimits: %v\n", err)
		return 1
	}
	return 0
}

// maxBodyBytes is the ingress's bound on a request body.
const maxBodyBytes = 64 << 10

// bare is the bare checkout handler.
type bare struct {
	verify *auth.Verifier
	seq    atomic.Int64
}

func newBareHandler(secret []byte) http.Handler {
	b := &bare{verify: auth.NewVerifier(secret)}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/orders", b.checkout)
	mux.HandleFunc("POST /v1/skus", b.created)
	mux.HandleFunc("POST /v1/addresses", b.created)
	ok := func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
	mux.HandleFunc("GET /healthz", ok)
	mux.HandleFunc("GET /readyz", ok)
	return mux
}

// checkoutRequest is the shape of the ingress's checkout body.
type checkoutRequest struct {
	AddressID     uuid.UUID           `json:"address_id"`
	PaymentMethod order.PaymentMethod `json:"payment_method"`
	Items         []order.LineRequest `json:"items"`
	CartSKUIDs    []uuid.UUID         `json:"cart_sku_ids"`
}

func (c *checkoutRequest) validate() error {
	var f order.Fields
	if c.AddressID == uuid.Nil {
		f.Add("address_id", "is required")
	}
	if !c.PaymentMethod.Valid() {
		f.Add("payment_method", "is not supported")
	}
	var lines error
	switch {
	case c.Items != nil && c.CartSKUIDs != nil:
		f.Add("items", "must not be sent with cart_sku_ids")
	case c.Items != nil:
		lines = order.ValidateLines(c.Items, "items")
	case c.CartSKUIDs != nil:
		lines = order.ValidateSKUIDs(c.CartSKUIDs, "cart_sku_ids")
	default:
		f.Add("items", "is required unless cart_sku_ids is sent")
	}
	f = append(f, order.ErrorFields(lines)...)
	return f.Err("invalid checkout")
}

// user authenticates r as the ingress does.
func (b *bare) user(r *http.Request) (auth.Principal, error) {
	raw, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || raw == "" {
		return auth.Principal{}, order.Errorf(order.EUNAUTHORIZED, "send Authorization: Bearer <token>")
	}
	return b.verify.Verify(strings.TrimSpace(raw))
}

// decodeStrict reads one JSON value of at most maxBodyBytes into v, no
// unknown fields, nothing after it.
func decodeStrict(w http.ResponseWriter, r *http.Request, v any) error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return order.Errorf(order.EUNSUPPORTED, "send the body as application/json")
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); !errors.Is(terr, io.EOF) {
			err = terr
			if err == nil {
				err = errors.New("data after the JSON value")
			}
		}
	}
	var mbe *http.MaxBytesError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &mbe):
		return order.Errorf(order.ETOOLARGE, "the body is larger than %d bytes", maxBodyBytes)
	default:
		return order.Errorf(order.EMALFORMED, "%v", err)
	}
}

func (b *bare) checkout(w http.ResponseWriter, r *http.Request) {
	p, err := b.user(r)
	if err != nil {
		writeError(w, err)
		return
	}
	var req checkoutRequest
	if err := decodeStrict(w, r, &req); err != nil {
		writeError(w, err)
		return
	}
	if err := req.validate(); err != nil {
		writeError(w, err)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	if len(key) > 255 {
		writeError(w, order.Invalid("invalid Idempotency-Key"))
		return
	}
	canon, _ := json.Marshal(req)
	sum := sha256.Sum256(canon)
	id := uuid.New()
	if key != "" {
		id = uuid.NewSHA1(uuid.NameSpaceOID, []byte(p.UserID+"\x00"+key+"\x00"+hex.EncodeToString(sum[:])))
	}
	self := "/v1/orders/" + id.String()
	w.Header().Set("Location", self)
	writeJSON(w, http.StatusAccepted, map[string]any{
		"order_id": id, "order_number": order.NumberFor(time.Now(), b.seq.Add(1)), "status": order.StatusPending,
		"links": map[string]string{"self": self, "events": self + "/events"},
	})
}

// created answers the setup's POST /v1/skus and /v1/addresses: 201, the
// body echoed with a fresh id.
func (b *bare) created(w http.ResponseWriter, r *http.Request) {
	if _, err := b.user(r); err != nil {
		writeError(w, err)
		return
	}
	var body map[string]any
	if err := decodeStrict(w, r, &body); err != nil {
		writeError(w, err)
		return
	}
	if body == nil {
		body = map[string]any{}
	}
	body["id"] = uuid.New()
	writeJSON(w, http.StatusCreated, body)
}

var statusOf = map[order.Code]int{
	order.EMALFORMED: 400, order.EUNAUTHORIZED: 401, order.ETOOLARGE: 413,
	order.EUNSUPPORTED: 415, order.EINVALID: 422,
}

func writeError(w http.ResponseWriter, err error) {
	var e *order.Error
	st := http.StatusInternalServerError
	title := "Internal error"
	if errors.As(err, &e) {
		if s, ok := statusOf[e.Code]; ok {
			st, title = s, string(e.Code)
		}
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(st)
	json.NewEncoder(w).Encode(map[string]any{"type": "about:blank", "title": title, "status": st, "detail": err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

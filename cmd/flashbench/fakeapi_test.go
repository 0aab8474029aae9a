package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/order"
)

// fakeAPI speaks the subset of SPEC 3 that flashbench uses, with an
// in-memory stock, so that the runner can be tested end to end before the
// real service runs. It decides orders after a short delay, as the workers
// would, all or nothing.
type fakeAPI struct {
	t      *testing.T
	verify *auth.Verifier

	// Faults to inject.
	oversell  bool // confirm every order, stock or not
	neverEach int  // leave every n-th order pending forever (0 = never)
	busyEach  int  // answer the first attempt of every n-th checkout 503 Retry-After
	deafPolls bool // long polls never see a change: they answer pending when the client gives up

	mu     sync.Mutex
	skus   map[uuid.UUID]*order.SKU
	carts  map[string]map[uuid.UUID]int64
	keys   map[string]uuid.UUID // user + key -> order
	orders map[uuid.UUID]*fakeOrder
	busy   map[string]bool // keys already answered 503 once
	n      int
}

type fakeOrder struct {
	user    string
	status  order.Status
	reason  order.RejectReason
	decided chan struct{}
}

func newFakeAPI(t *testing.T, secret string) (*fakeAPI, *httptest.Server) {
	f := &fakeAPI{
		t: t, verify: auth.NewVerifier([]byte(secret)),
		skus: map[uuid.UUID]*order.SKU{}, carts: map[string]map[uuid.UUID]int64{},
		keys: map[string]uuid.UUID{}, orders: map[uuid.UUID]*fakeOrder{}, busy: map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/skus", f.createSKU)
	mux.HandleFunc("GET /v1/skus/{id}", f.getSKU)
	mux.HandleFunc("POST /v1/addresses", f.createAddress)
	mux.HandleFunc("PUT /v1/cart/items/{id}", f.putCart)
	mux.HandleFunc("POST /v1/checkout/preview", f.preview)
	mux.HandleFunc("POST /v1/orders", f.checkout)
	mux.HandleFunc("GET /v1/orders/{id}", f.getOrder)
	mux.HandleFunc("GET /v1/orders/{id}/events", f.events)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *fakeAPI) user(w http.ResponseWriter, r *http.Request) (auth.Principal, bool) {
	p, err := f.verify.Verify(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
	if err != nil {
		http.Error(w, `{"title":"unauthorized","status":401}`, http.StatusUnauthorized)
		return p, false
	}
	return p, true
}

func writeJSONT(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (f *fakeAPI) createSKU(w http.ResponseWriter, r *http.Request) {
	p, ok := f.user(w, r)
	if !ok {
		return
	}
	if !p.Admin {
		writeJSONT(w, 403, problem{Status: 403, Title: "forbidden"})
		return
	}
	var n order.NewSKU
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&n); err != nil || n.Validate() != nil {
		writeJSONT(w, 422, problem{Status: 422, Title: "invalid SKU"})
		return
	}
	s := &order.SKU{ID: uuid.New(), Name: n.Name, Price: *n.Price, Currency: n.Currency, Stock: *n.Stock, InitialStock: *n.Stock}
	f.mu.Lock()
	f.skus[s.ID] = s
	c := *s
	f.mu.Unlock()
	writeJSONT(w, 201, c)
}

func (f *fakeAPI) getSKU(w http.ResponseWriter, r *http.Request) {
	if _, ok := f.user(w, r); !ok {
		return
	}
	f.mu.Lock()
	s, ok := f.skus[uuid.MustParse(r.PathValue("id"))]
	var c order.SKU
	if ok {
		c = *s
	}
	f.mu.Unlock()
	if !ok {
		writeJSONT(w, 404, problem{Status: 404, Title: "not found"})
		return
	}
	writeJSONT(w, 200, c)
}

func (f *fakeAPI) createAddress(w http.ResponseWriter, r *http.Request) {
	if _, ok := f.user(w, r); !ok {
		return
	}
	var a order.NewAddress
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil || a.Validate() != nil {
		writeJSONT(w, 422, problem{Status: 422, Title: "invalid address"})
		return
	}
	writeJSONT(w, 201, map[string]any{"id": uuid.New(), "recipient": a.Recipient})
}

func (f *fakeAPI) putCart(w http.ResponseWriter, r *http.Request) {
	p, ok := f.user(w, r)
	if !ok {
		return
	}
	var body struct{ Quantity int64 }
	json.NewDecoder(r.Body).Decode(&body)
	f.mu.Lock()
	if f.carts[p.UserID] == nil {
		f.carts[p.UserID] = map[uuid.UUID]int64{}
	}
	f.carts[p.UserID][uuid.MustParse(r.PathValue("id"))] = body.Quantity
	f.mu.Unlock()
	writeJSONT(w, 200, map[string]any{"items": []any{}})
}

func (f *fakeAPI) preview(w http.ResponseWriter, r *http.Request) {
	if _, ok := f.user(w, r); !ok {
		return
	}
	var body struct {
		CartSKUIDs []uuid.UUID `json:"cart_sku_ids"`
	}
	if json.NewDecoder(r.Body).Decode(&body) != nil || len(body.CartSKUIDs) != 3 {
		writeJSONT(w, 422, problem{Status: 422, Title: "want 3 SKUs"})
		return
	}
	writeJSONT(w, 200, map[string]any{"item_count": 3})
}

func (f *fakeAPI) checkout(w http.ResponseWriter, r *http.Request) {
	p, ok := f.user(w, r)
	if !ok {
		return
	}
	key := r.Header.Get("Idempotency-Key")
	var body checkoutRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil || key == "" || body.AddressID == uuid.Nil {
		writeJSONT(w, 422, problem{Status: 422, Title: "bad checkout"})
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	k := p.UserID + "\x00" + key
	if id, ok := f.keys[k]; ok {
		writeJSONT(w, 202, accepted{OrderID: id, Status: "pending"})
		return
	}
	f.n++
	if f.busyEach > 0 && f.n%f.busyEach == 0 && !f.busy[k] {
		f.busy[k] = true
		f.n--
		w.Header().Set("Retry-After", "0")
		writeJSONT(w, 503, problem{Status: 503, Title: "queue unavailable"})
		return
	}
	lines := body.Items
	for _, id := range body.CartSKUIDs {
		lines = append(lines, order.LineRequest{SKUID: id, Quantity: f.carts[p.UserID][id]})
	}
	id := uuid.New()
	o := &fakeOrder{user: p.UserID, status: order.StatusPending, decided: make(chan struct{})}
	f.keys[k], f.orders[id] = id, o
	if f.neverEach > 0 && f.n%f.neverEach == 0 {
		writeJSONT(w, 202, accepted{OrderID: id, Status: "pending"})
		return
	}
	time.AfterFunc(time.Duration(1+f.n%5)*time.Millisecond, func() { f.decide(o, lines) })
	writeJSONT(w, 202, accepted{OrderID: id, Status: "pending"})
}

func (f *fakeAPI) decide(o *fakeOrder, lines []order.LineRequest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	o.status = order.StatusConfirmed
	for _, l := range lines {
		if f.skus[l.SKUID].Stock < l.Quantity && !f.oversell {
			o.status, o.reason = order.StatusRejected, order.RejectOutOfStock
		}
	}
	if o.status == order.StatusConfirmed {
		for _, l := range lines {
			f.skus[l.SKUID].Stock = max(0, f.skus[l.SKUID].Stock-l.Quantity)
		}
	}
	close(o.decided)
}

func (f *fakeAPI) find(w http.ResponseWriter, r *http.Request) (*fakeOrder, bool) {
	p, ok := f.user(w, r)
	if !ok {
		return nil, false
	}
	f.mu.Lock()
	o := f.orders[uuid.MustParse(r.PathValue("id"))]
	f.mu.Unlock()
	if o == nil || o.user != p.UserID {
		writeJSONT(w, 404, problem{Status: 404, Title: "not found"})
		return nil, false
	}
	return o, true
}

func (f *fakeAPI) view(o *fakeOrder) orderStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	return orderStatus{Status: o.status, RejectReason: o.reason}
}

func (f *fakeAPI) getOrder(w http.ResponseWriter, r *http.Request) {
	o, ok := f.find(w, r)
	if !ok {
		return
	}
	if d, err := time.ParseDuration(r.URL.Query().Get("wait")); err == nil && f.deafPolls {
		<-r.Context().Done()
		return
	} else if err == nil {
		select {
		case <-o.decided:
		case <-time.After(min(d, time.Second)): // shorter than the real 25s, to keep tests fast
		case <-r.Context().Done():
		}
	}
	writeJSONT(w, 200, f.view(o))
}

func (f *fakeAPI) events(w http.ResponseWriter, r *http.Request) {
	o, ok := f.find(w, r)
	if !ok {
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	send := func() {
		st := f.view(o)
		data, _ := json.Marshal(st)
		fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", st.Status, st.Status, data)
		w.(http.Flusher).Flush()
	}
	fmt.Fprint(w, "retry: 2000\n\n")
	send()
	select {
	case <-o.decided:
		send()
	case <-r.Context().Done():
	}
}

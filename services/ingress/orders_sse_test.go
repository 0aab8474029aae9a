package ingress

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// rawEvents opens GET /v1/orders/{id}/events without reading it, with a
// Last-Event-ID if lastID is not empty. The caller closes the body.
func (e *orderEnv) rawEvents(t *testing.T, b buyer, id uuid.UUID, lastID string) (*http.Response, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, "GET", e.URL+"/v1/orders/"+id.String()+"/events", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+b.Token)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	client := &http.Client{Transport: e.Client.Transport} // no overall timeout: it is a stream
	return client.Do(req)
}

// sseEvent is one event of a stream.
type sseEvent struct {
	ID, Event string
	Order     order.Order
}

// sseReader reads the events and comments of a stream. events is closed
// when the stream ends, after the events before the end; err is then the
// read error (nil: the server closed the stream).
type sseReader struct {
	events     chan sseEvent
	heartbeats chan struct{}
	err        error
}

func readSSE(t *testing.T, body io.Reader) *sseReader {
	r := &sseReader{events: make(chan sseEvent, 16), heartbeats: make(chan struct{}, 1024)}
	go func() {
		defer close(r.events)
		sc := bufio.NewScanner(body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		var ev sseEvent
		var data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if data != "" {
					if err := json.Unmarshal([]byte(data), &ev.Order); err != nil {
						t.Errorf("event data %q: %v", data, err)
					}
					r.events <- ev
				}
				ev, data = sseEvent{}, ""
			case strings.HasPrefix(line, ":"):
				select {
				case r.heartbeats <- struct{}{}:
				default:
				}
			case strings.HasPrefix(line, "id: "):
				ev.ID = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.Event = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data += strings.TrimPrefix(line, "data: ")
			case strings.HasPrefix(line, "retry: "):
			default:
				t.Errorf("unexpected stream line %q", line)
			}
		}
		r.err = sc.Err()
	}()
	return r
}

// next returns the next event, failing after 5 seconds.
func (r *sseReader) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-r.events:
		if !ok {
			t.Fatalf("the stream ended (%v) before the next event", r.err)
		}
		return ev
	case <-time.After(5 * time.Second):
		t.Fatal("no event within 5s")
	}
	return sseEvent{}
}

// closed fails unless the server ends the stream within 5 seconds with no
// further event.
func (r *sseReader) closed(t *testing.T) {
	t.Helper()
	select {
	case ev, ok := <-r.events:
		if ok {
			t.Fatalf("unexpected event %s", ev.Event)
		}
		if r.err != nil && !errors.Is(r.err, io.EOF) {
			t.Errorf("stream ended with %v", r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream is still open")
	}
}

func wantEvent(t *testing.T, ev sseEvent, id uuid.UUID, st order.Status) {
	t.Helper()
	if ev.ID != string(st) || ev.Event != string(st) || ev.Order.Status != st || ev.Order.ID != id {
		t.Fatalf("event id %q event %q order %s %s; want %s of %s", ev.ID, ev.Event, ev.Order.ID, ev.Order.Status, st, id)
	}
}

func TestOrderEvents(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	id := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID

	resp, err := e.rawEvents(t, b, id, "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		t.Fatalf("status %d content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	r := readSSE(t, resp.Body)
	wantEvent(t, r.next(t), id, order.StatusPending)
	// Heartbeats while nothing happens.
	select {
	case <-r.heartbeats:
	case <-time.After(5 * time.Second):
		t.Fatal("no heartbeat")
	}
	e.decide(t, id, order.StatusConfirmed)
	ev := r.next(t)
	wantEvent(t, ev, id, order.StatusConfirmed)
	if ev.Order.GrandTotal != 1500+testShippingFee {
		t.Errorf("confirmed event carries %+v, want the priced order", ev.Order)
	}
	// A repeated event (redelivery) is not sent twice.
	e.decide(t, id, order.StatusConfirmed)
	e.decide(t, id, order.StatusPaid)
	wantEvent(t, r.next(t), id, order.StatusPaid)
	r.closed(t)
}

func TestOrderEventsFinalOrderClosesAtOnce(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	o := e.insertOrder(t, b, sku, order.StatusRejected, time.Now(), "", "")
	resp, err := e.rawEvents(t, b, o.ID, "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := readSSE(t, resp.Body)
	wantEvent(t, r.next(t), o.ID, order.StatusRejected)
	r.closed(t)
}

func TestOrderEventsResume(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	id := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID
	e.decide(t, id, order.StatusConfirmed)

	t.Run("skips what the client has", func(t *testing.T) {
		resp, err := e.rawEvents(t, b, id, "confirmed")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := readSSE(t, resp.Body)
		select {
		case ev, ok := <-r.events:
			t.Fatalf("resumed after confirmed, got %s again (%v)", ev.Event, ok)
		case <-time.After(400 * time.Millisecond):
		}
		e.decide(t, id, order.StatusCancelled)
		wantEvent(t, r.next(t), id, order.StatusCancelled)
		r.closed(t)
	})
	t.Run("gets what it missed", func(t *testing.T) {
		resp, err := e.rawEvents(t, b, id, "pending")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		r := readSSE(t, resp.Body)
		wantEvent(t, r.next(t), id, order.StatusCancelled)
		r.closed(t)
	})
	t.Run("after the final event: 204", func(t *testing.T) {
		resp, err := e.rawEvents(t, b, id, "cancelled")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Errorf("status %d, want 204 (stop reconnecting)", resp.StatusCode)
		}
	})
	t.Run("malformed Last-Event-ID", func(t *testing.T) {
		for _, bad := range []string{"42", "confirmed;", "PENDING", strings.Repeat("x", 300)} {
			resp, err := e.rawEvents(t, b, id, bad)
			if err != nil {
				t.Fatal(err)
			}
			data, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			wantProblem(t, resp, data, http.StatusBadRequest)
		}
	})
}

func TestOrderEventsEndOnShutdown(t *testing.T) {
	t.Parallel()
	e := newOrderEnv(t)
	b := e.newBuyer(t)
	sku := e.createSKU(t, newSKU("Sneaker", 100, 10))
	id := e.mustCheckout(t, b, directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}), "").OrderID
	resp, err := e.rawEvents(t, b, id, "")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := readSSE(t, resp.Body)
	wantEvent(t, r.next(t), id, order.StatusPending)
	e.Hub.Close() // what orderd does when it stops
	r.closed(t)
}

package natsbus

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go"
)

// PinsSubject carries the workers' pin notes: which worker process holds
// which partition's pin. JetStream's consumer info names the pinned client
// only by its pin id; each worker says, every few seconds, which pin ids
// are its own, so that the operator page can name the worker.
const PinsSubject = "orders.pins"

// PinNote is one worker's pins: partition -> pin id.
type PinNote struct {
	Worker string         `json:"worker"`
	Pins   map[int]string `json:"pins"`
}

// AnnouncePins publishes a worker's pin note (core NATS: a lost note is
// replaced by the next).
func AnnouncePins(nc *nats.Conn, worker string, pins map[int]string) error {
	data, err := json.Marshal(PinNote{Worker: worker, Pins: pins})
	if err != nil {
		return err
	}
	return nc.Publish(PinsSubject, data)
}

// pinOwner is the worker a pin id belongs to, as last announced.
type pinOwner struct {
	worker string
	seen   time.Time
}

// pinOwnersTTL is how long a pin note names its pins' worker: a few of the
// workers' announcement periods.
const pinOwnersTTL = 30 * time.Second

// notePins records a worker's pin note.
func (f *OpsFeed) notePins(m *nats.Msg) {
	var n PinNote
	if err := json.Unmarshal(m.Data, &n); err != nil || n.Worker == "" {
		return
	}
	now := time.Now()
	f.mu.Lock()
	defer f.mu.Unlock()
	for pin, o := range f.pinOwners {
		if now.Sub(o.seen) > pinOwnersTTL {
			delete(f.pinOwners, pin)
		}
	}
	for _, pin := range n.Pins {
		if pin != "" && len(f.pinOwners) < 10_000 {
			f.pinOwners[pin] = pinOwner{worker: n.Worker, seen: now}
		}
	}
}

// pinWorker returns the worker that announced pin, or "".
func (f *OpsFeed) pinWorker(pin string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pinOwners[pin].worker
}

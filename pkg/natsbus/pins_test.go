package natsbus

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestPinNotes: a worker's pin note names it as the holder of its pins; a
// note past its time is forgotten.
func TestPinNotes(t *testing.T) {
	f := &OpsFeed{pinOwners: map[string]pinOwner{}}
	note := func(data string) { f.notePins(&nats.Msg{Data: []byte(data)}) }
	note(`{"worker":"w1","pins":{"0":"pinA","3":"pinB"}}`)
	note(`{"worker":"w2","pins":{"1":"pinC"}}`)
	note(`not json`)
	note(`{"pins":{"2":"pinD"}}`) // no worker: ignored
	for pin, want := range map[string]string{"pinA": "w1", "pinB": "w1", "pinC": "w2", "pinD": "", "other": ""} {
		if got := f.pinWorker(pin); got != want {
			t.Errorf("pin %s: worker %q, want %q", pin, got, want)
		}
	}
	f.pinOwners["pinA"] = pinOwner{worker: "w1", seen: time.Now().Add(-2 * pinOwnersTTL)}
	note(`{"worker":"w2","pins":{"1":"pinC"}}`)
	if got := f.pinWorker("pinA"); got != "" {
		t.Errorf("a stale note still names %q", got)
	}
}

package worker

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
)

// TestPackCommands: command rows are packed per subject, in order, at most
// relayEnvelopeMax commands an envelope, under a Nats-Msg-Id that is the
// same for the same rows.
func TestPackCommands(t *testing.T) {
	var rows []postgres.OutboxRow
	var want = map[int][]uuid.UUID{}
	for i := range relayEnvelopeMax + 30 {
		p := i % 2
		if i >= 20 {
			p = 0
		}
		cmd := order.Command{ID: uuid.New(), Kind: order.KindRelease, Partition: p, At: time.Now().UTC(),
			Release: &order.Release{OrderID: uuid.New()}}
		m, err := postgres.CommandMessage(cmd)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, postgres.OutboxRow{ID: int64(i + 1), OutboxMessage: m})
		want[p] = append(want[p], cmd.ID)
	}
	packed, err := packCommands(rows)
	if err != nil {
		t.Fatal(err)
	}
	got := map[int][]uuid.UUID{}
	for _, env := range packed {
		var p int
		if _, err := fmt.Sscanf(env.Subject, "orders.cmd.%d", &p); err != nil {
			t.Fatalf("subject %q", env.Subject)
		}
		cmds, err := order.DecodeEnvelope(env.Payload, p, 2)
		if err != nil {
			t.Fatalf("envelope for %s: %v", env.Subject, err)
		}
		if len(cmds) > relayEnvelopeMax {
			t.Errorf("envelope of %d commands", len(cmds))
		}
		for _, c := range cmds {
			got[p] = append(got[p], c.ID)
		}
	}
	if len(packed) != 3 {
		t.Errorf("%d envelopes, want 3 (partition 0 split in two, partition 1 in one)", len(packed))
	}
	for p := range want {
		if fmt.Sprint(got[p]) != fmt.Sprint(want[p]) {
			t.Errorf("partition %d: commands out of order or missing", p)
		}
	}
	again, _ := packCommands(rows)
	for i := range packed {
		if again[i].MsgID != packed[i].MsgID {
			t.Errorf("envelope %d: msg id %s then %s", i, packed[i].MsgID, again[i].MsgID)
		}
	}
}

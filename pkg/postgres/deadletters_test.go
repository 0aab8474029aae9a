package postgres_test

import (
	"context"
	"testing"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

func TestDeadLetters(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()

	d := &postgres.DeadLetter{SourceKey: "seq-7", Partition: 3, Subject: "orders.cmd.3", StreamSeq: 7,
		Reason: postgres.DeadMaxDeliveries, LastError: "boom", Deliveries: 10, Payload: []byte(`{"commands":[]}`)}
	id, created, err := db.RecordDeadLetter(ctx, d)
	if err != nil || !created || id == 0 {
		t.Fatalf("record: id %d, created %v, err %v", id, created, err)
	}
	// The same message again (another advisory subscriber, a retry) is the same row.
	again, created, err := db.RecordDeadLetter(ctx, d)
	if err != nil || created || again != id {
		t.Fatalf("record again: id %d (want %d), created %v, err %v", again, id, created, err)
	}
	second, _, err := db.RecordDeadLetter(ctx, &postgres.DeadLetter{SourceKey: "cmd-x", Partition: 0, Subject: "orders.cmd.0",
		Reason: postgres.DeadPoisonCommand, Payload: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}

	got, err := db.DeadLetter(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.StreamSeq != 7 || got.LastError != "boom" || got.Deliveries != 10 || string(got.Payload) != `{"commands":[]}` || got.ReplayedAt != nil {
		t.Errorf("read back %+v", got)
	}
	if _, err := db.DeadLetter(ctx, 999999); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("unknown id: %v, want ENOTFOUND", err)
	}

	page, err := db.DeadLetters(ctx, 0, 1)
	if err != nil || len(page) != 1 || page[0].ID != second {
		t.Fatalf("first page %+v, %v: want the newest (%d)", page, err, second)
	}
	page, err = db.DeadLetters(ctx, page[0].ID, 10)
	if err != nil || len(page) != 1 || page[0].ID != id {
		t.Fatalf("second page %+v, %v", page, err)
	}

	if n, err := db.UnreplayedDeadLetters(ctx); err != nil || n != 2 {
		t.Errorf("unreplayed %d, %v; want 2", n, err)
	}
	r, first, err := db.MarkDeadLetterReplayed(ctx, id)
	if err != nil || !first || r.ReplayedAt == nil {
		t.Fatalf("mark replayed: %+v, first %v, err %v", r, first, err)
	}
	r2, first, err := db.MarkDeadLetterReplayed(ctx, id)
	if err != nil || first || !r2.ReplayedAt.Equal(*r.ReplayedAt) {
		t.Fatalf("mark replayed twice: %+v, first %v, err %v", r2, first, err)
	}
	if _, _, err := db.MarkDeadLetterReplayed(ctx, 999999); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("replay unknown id: %v, want ENOTFOUND", err)
	}
	if n, err := db.UnreplayedDeadLetters(ctx); err != nil || n != 1 {
		t.Errorf("unreplayed %d, %v; want 1", n, err)
	}
}

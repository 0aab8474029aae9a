package postgres_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/pkg/postgres"
	"github.com/flashsale/orderd/pkg/postgres/pgtest"
)

func newAddress(recipient string) *order.NewAddress {
	return &order.NewAddress{Recipient: recipient, Line1: "1 Main Street", City: "Berlin", PostalCode: "10115", Country: "DE"}
}

func TestAddresses(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()

	if def, err := db.DefaultAddress(ctx, "alice"); err != nil || def != nil {
		t.Fatalf("no addresses: default %v, %v; want nil, nil", def, err)
	}
	if as, err := db.Addresses(ctx, "alice"); err != nil || as == nil || len(as) != 0 {
		t.Fatalf("no addresses: %v, %v; want an empty list", as, err)
	}

	n := newAddress("Home")
	n.Line2, n.Phone = ptr("Apt 4"), ptr("+49")
	home, err := db.CreateAddress(ctx, "alice", n)
	if err != nil {
		t.Fatal(err)
	}
	want := order.Address{ID: home.ID, UserID: "alice", Recipient: "Home", Line1: "1 Main Street", Line2: ptr("Apt 4"),
		City: "Berlin", PostalCode: "10115", Country: "DE", Phone: ptr("+49"), CreatedAt: home.CreatedAt}
	if diff := cmp.Diff(&want, home); diff != "" {
		t.Errorf("created (-want +got):\n%s", diff)
	}
	work, err := db.CreateAddress(ctx, "alice", newAddress("Work"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateAddress(ctx, "bob", newAddress("Bob")); err != nil {
		t.Fatal(err)
	}

	ids := func(user string) []uuid.UUID {
		as, err := db.Addresses(ctx, user)
		if err != nil {
			t.Fatal(err)
		}
		var out []uuid.UUID
		for _, a := range as {
			if a.UserID != user {
				t.Errorf("%s sees %s's address", user, a.UserID)
			}
			out = append(out, a.ID)
		}
		return out
	}
	if diff := cmp.Diff([]uuid.UUID{work.ID, home.ID}, ids("alice")); diff != "" {
		t.Errorf("newest first (-want +got):\n%s", diff)
	}
	if def, err := db.DefaultAddress(ctx, "alice"); err != nil || def == nil || def.ID != work.ID {
		t.Errorf("default %v, %v; want %s", def, err, work.ID)
	}
	if a, err := db.Address(ctx, "alice", home.ID); err != nil || a.ID != home.ID {
		t.Errorf("Address: %v, %v", a, err)
	}

	// Another user's address is not found, for reading or deleting.
	if _, err := db.Address(ctx, "bob", home.ID); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("bob reads alice's address: %v", err)
	}
	if err := db.DeleteAddress(ctx, "bob", home.ID); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("bob deletes alice's address: %v", err)
	}

	if err := db.DeleteAddress(ctx, "alice", work.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteAddress(ctx, "alice", work.ID); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("second delete: %v, want ENOTFOUND", err)
	}
	if _, err := db.Address(ctx, "alice", work.ID); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("deleted address read: %v, want ENOTFOUND", err)
	}
	if diff := cmp.Diff([]uuid.UUID{home.ID}, ids("alice")); diff != "" {
		t.Errorf("after delete (-want +got):\n%s", diff)
	}
	if def, err := db.DefaultAddress(ctx, "alice"); err != nil || def == nil || def.ID != home.ID {
		t.Errorf("default after delete %v, %v; want %s", def, err, home.ID)
	}
	if err := db.DeleteAddress(ctx, "alice", uuid.New()); order.ErrorCode(err) != order.ENOTFOUND {
		t.Errorf("delete missing: %v, want ENOTFOUND", err)
	}
}

func TestCreateAddressInvalid(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	n := newAddress("A")
	n.Country = "de"
	if _, err := db.CreateAddress(context.Background(), "alice", n); order.ErrorCode(err) != order.EINVALID {
		t.Errorf("error %v, want EINVALID", err)
	}
}

// TestDefaultAddressConcurrent: calls answered together in one query each
// get their own user's newest address, or nil.
func TestDefaultAddressConcurrent(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()
	newest := map[string]uuid.UUID{}
	for i := range 10 {
		user := fmt.Sprintf("u%d", i)
		for j := range 2 {
			a, err := db.CreateAddress(ctx, user, &order.NewAddress{Recipient: fmt.Sprintf("R%d", j), Line1: "L1", City: "Berlin", PostalCode: "10115", Country: "DE"})
			if err != nil {
				t.Fatal(err)
			}
			newest[user] = a.ID
			time.Sleep(time.Millisecond) // distinct created_at
		}
	}
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			user := fmt.Sprintf("u%d", i%12) // u10 and u11 have none
			got, err := db.DefaultAddress(ctx, user)
			switch {
			case err != nil:
				t.Error(err)
			case newest[user] == uuid.Nil && got != nil:
				t.Errorf("%s: got %s, want none", user, got.ID)
			case newest[user] != uuid.Nil && (got == nil || got.ID != newest[user] || got.UserID != user):
				t.Errorf("%s: got %+v, want %s", user, got, newest[user])
			}
		})
	}
	wg.Wait()
}

// TestCreateAddressCapped: 60 concurrent creates by one user store 50
// addresses (the cap) and refuse 10 with ECONFLICT; another user is not
// affected, and a deleted address makes room.
func TestCreateAddressCapped(t *testing.T) {
	t.Parallel()
	_, db := pgtest.New(t)
	ctx := context.Background()
	var mu sync.Mutex
	var created []uuid.UUID
	refused := 0
	var wg sync.WaitGroup
	for range postgres.MaxAddresses + 10 {
		wg.Go(func() {
			a, err := db.CreateAddress(ctx, "alice", newAddress("A"))
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				created = append(created, a.ID)
			case order.ErrorCode(err) == order.ECONFLICT:
				refused++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if len(created) != postgres.MaxAddresses || refused != 10 {
		t.Fatalf("%d created, %d refused; want %d and 10", len(created), refused, postgres.MaxAddresses)
	}
	if _, err := db.CreateAddress(ctx, "bob", newAddress("B")); err != nil {
		t.Errorf("bob: %v", err)
	}
	if err := db.DeleteAddress(ctx, "alice", created[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateAddress(ctx, "alice", newAddress("A")); err != nil {
		t.Errorf("after a delete: %v", err)
	}
}

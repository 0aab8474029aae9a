package ingress

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

func TestAddresses(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")

	var list addressList
	e.mustDo(t, "GET", "/v1/addresses", alice, nil, http.StatusOK, &list)
	if list.Items == nil || len(list.Items) != 0 {
		t.Errorf("no addresses: want items [], got %+v", list.Items)
	}

	home := newAddress("Alice Home")
	home.Line2, home.Phone = ptr("Apt 4"), ptr("+49 30 1234567")
	var first addressView
	resp := e.mustDo(t, "POST", "/v1/addresses", alice, home, http.StatusCreated, &first)
	if loc, want := resp.Header.Get("Location"), "/v1/addresses/"+first.ID.String(); loc != want {
		t.Errorf("Location %q, want %q", loc, want)
	}
	want := addressView{Address: order.Address{
		ID: first.ID, Recipient: "Alice Home", Line1: "1 Main Street", Line2: ptr("Apt 4"), City: "Berlin",
		PostalCode: "10115", Country: "DE", Phone: ptr("+49 30 1234567"), CreatedAt: first.CreatedAt,
	}, Default: true}
	if diff := cmp.Diff(want, first); diff != "" {
		t.Errorf("created address (-want +got):\n%s", diff)
	}
	second := e.createAddress(t, alice, newAddress("Alice Work"))
	third := e.createAddress(t, alice, newAddress("Alice Parents"))

	ids := func() []uuid.UUID {
		var l addressList
		e.mustDo(t, "GET", "/v1/addresses", alice, nil, http.StatusOK, &l)
		var out []uuid.UUID
		for i, a := range l.Items {
			if a.Default != (i == 0) {
				t.Errorf("address %d has default %v", i, a.Default)
			}
			out = append(out, a.ID)
		}
		return out
	}
	if diff := cmp.Diff([]uuid.UUID{third.ID, second.ID, first.ID}, ids()); diff != "" {
		t.Errorf("newest first (-want +got):\n%s", diff)
	}

	var got addressView
	e.mustDo(t, "GET", "/v1/addresses/"+second.ID.String(), alice, nil, http.StatusOK, &got)
	if got.ID != second.ID || got.Default {
		t.Errorf("GET second: %+v, want it and not the default", got)
	}

	// Deleting the default makes the next newest the default.
	e.mustDo(t, "DELETE", "/v1/addresses/"+third.ID.String(), alice, nil, http.StatusNoContent, nil)
	if diff := cmp.Diff([]uuid.UUID{second.ID, first.ID}, ids()); diff != "" {
		t.Errorf("after delete (-want +got):\n%s", diff)
	}
	e.mustDo(t, "GET", "/v1/addresses/"+second.ID.String(), alice, nil, http.StatusOK, &got)
	if !got.Default {
		t.Error("the newest remaining address is not the default")
	}
	for _, method := range []string{"GET", "DELETE"} {
		resp, body := e.do(t, method, "/v1/addresses/"+third.ID.String(), alice, nil)
		wantProblem(t, resp, body, http.StatusNotFound)
	}
	// The row stays for the orders that ship to it.
	var deleted int
	if err := e.DB.Get(&deleted, `SELECT count(*) FROM addresses WHERE id = $1 AND deleted_at IS NOT NULL`, third.ID); err != nil || deleted != 1 {
		t.Errorf("deleted address row: %d, %v", deleted, err)
	}
}

func TestAddressesOfAnotherUser(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice, bob := e.token(t, "alice"), e.token(t, "bob")
	a := e.createAddress(t, alice, newAddress("Alice"))
	path := "/v1/addresses/" + a.ID.String()

	before := e.snapshot(t)
	for _, method := range []string{"GET", "DELETE"} {
		resp, body := e.do(t, method, path, bob, nil)
		p := wantProblem(t, resp, body, http.StatusNotFound)
		// Bob's 404 must read like one for an id that never existed.
		resp, body = e.do(t, method, "/v1/addresses/"+uuid.NewString(), bob, nil)
		q := wantProblem(t, resp, body, http.StatusNotFound)
		if p.Title != q.Title || p.Type != q.Type {
			t.Errorf("another user's address and a missing one answer differently: %+v, %+v", p, q)
		}
	}
	var list addressList
	e.mustDo(t, "GET", "/v1/addresses", bob, nil, http.StatusOK, &list)
	if len(list.Items) != 0 {
		t.Errorf("bob sees %+v", list.Items)
	}
	e.assertUnchanged(t, before)
	e.mustDo(t, "GET", path, alice, nil, http.StatusOK, nil)
}

func TestAddressInvalid(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	long := strings.Repeat("x", 201)
	cases := []struct {
		name   string
		body   any
		fields []string
	}{
		{"empty", `{}`, []string{"recipient", "line1", "city", "postal_code", "country"}},
		{"blank recipient", map[string]any{"recipient": " ", "line1": "a", "city": "b", "postal_code": "1", "country": "DE"}, []string{"recipient"}},
		{"long line1", map[string]any{"recipient": "a", "line1": long, "city": "b", "postal_code": "1", "country": "DE"}, []string{"line1"}},
		{"long line2", map[string]any{"recipient": "a", "line1": "a", "line2": long, "city": "b", "postal_code": "1", "country": "DE"}, []string{"line2"}},
		{"NUL in city", map[string]any{"recipient": "a", "line1": "a", "city": "b\x00", "postal_code": "1", "country": "DE"}, []string{"city"}},
		{"long postal code", map[string]any{"recipient": "a", "line1": "a", "city": "b", "postal_code": strings.Repeat("1", 21), "country": "DE"}, []string{"postal_code"}},
		{"lower-case country", map[string]any{"recipient": "a", "line1": "a", "city": "b", "postal_code": "1", "country": "de"}, []string{"country"}},
		{"alpha-3 country", map[string]any{"recipient": "a", "line1": "a", "city": "b", "postal_code": "1", "country": "DEU"}, []string{"country"}},
		{"long phone", map[string]any{"recipient": "a", "line1": "a", "city": "b", "postal_code": "1", "country": "DE", "phone": strings.Repeat("1", 33)}, []string{"phone"}},
		{"number as city", `{"recipient":"a","line1":"a","city":5,"postal_code":"1","country":"DE"}`, []string{"city"}},
	}
	before := e.snapshot(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := e.do(t, "POST", "/v1/addresses", alice, c.body)
			p := wantProblem(t, resp, body, http.StatusUnprocessableEntity)
			var got []string
			for _, f := range p.Errors {
				got = append(got, f.Field)
			}
			if diff := cmp.Diff(c.fields, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
				t.Errorf("fields at fault (-want +got):\n%s", diff)
			}
		})
	}
	e.assertUnchanged(t, before)
}

func TestAddressBadPathID(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	e.createAddress(t, alice, newAddress("Alice"))
	before := e.snapshot(t)
	for _, id := range []string{"abc", "1", uuid.NewString() + "0", "00000000-0000-0000-0000-000000000000"} {
		for _, method := range []string{"GET", "DELETE"} {
			resp, body := e.do(t, method, "/v1/addresses/"+id, alice, nil)
			wantProblem(t, resp, body, http.StatusNotFound)
		}
	}
	e.assertUnchanged(t, before)
}

// TestAddressesCapped: a user keeps at most 50 addresses; the 51st is 409
// and stores nothing. Deleting one makes room.
func TestAddressesCapped(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	var last addressView
	for range 50 {
		last = e.createAddress(t, alice, newAddress("Alice"))
	}
	before := e.snapshot(t)
	resp, body := e.do(t, "POST", "/v1/addresses", alice, newAddress("One too many"))
	wantProblem(t, resp, body, http.StatusConflict)
	e.assertUnchanged(t, before)
	e.mustDo(t, "DELETE", "/v1/addresses/"+last.ID.String(), alice, nil, http.StatusNoContent, nil)
	e.createAddress(t, alice, newAddress("Alice again"))
	// Another user is not affected.
	e.createAddress(t, e.token(t, "bob"), newAddress("Bob"))
}

// TestAddressesPaginated: GET /v1/addresses?limit=N returns N addresses,
// newest first, and a next_cursor that continues after the last; the last
// page's next_cursor is null. Only the first address of the first page is
// the default.
func TestAddressesPaginated(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	alice := e.token(t, "alice")
	var want []uuid.UUID
	for range 5 {
		a := e.createAddress(t, alice, newAddress("Alice"))
		want = append([]uuid.UUID{a.ID}, want...)
	}
	var got []uuid.UUID
	path := "/v1/addresses?limit=2"
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatalf("more pages than addresses: %v", got)
		}
		var page struct {
			Items      []addressView `json:"items"`
			NextCursor *string       `json:"next_cursor"`
		}
		e.mustDo(t, "GET", path, alice, nil, http.StatusOK, &page)
		if len(page.Items) > 2 {
			t.Fatalf("page of %d addresses, want at most 2", len(page.Items))
		}
		for i, a := range page.Items {
			if a.Default != (pages == 0 && i == 0) {
				t.Errorf("page %d item %d: default %v", pages, i, a.Default)
			}
			got = append(got, a.ID)
		}
		if page.NextCursor == nil {
			break
		}
		path = "/v1/addresses?limit=2&cursor=" + *page.NextCursor
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("all pages, newest first (-want +got):\n%s", diff)
	}
	for q, field := range map[string]string{"limit=0": "limit", "limit=101": "limit", "limit=x": "limit", "cursor=nope": "cursor"} {
		resp, body := e.do(t, "GET", "/v1/addresses?"+q, alice, nil)
		if p := wantProblem(t, resp, body, http.StatusUnprocessableEntity); !p.hasField(field) {
			t.Errorf("?%s: problem %+v does not name %s", q, p, field)
		}
	}
}

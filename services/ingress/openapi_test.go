package ingress

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/google/uuid"

	"github.com/flashsale/orderd/pkg/order"
)

// apiDoc loads the embedded OpenAPI document once and builds its router.
var apiDoc = sync.OnceValues(func() (*openAPIChecker, error) {
	doc, err := openapi3.NewLoader().LoadFromData(openAPIDoc)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(context.Background()); err != nil {
		return nil, err
	}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		return nil, err
	}
	return &openAPIChecker{doc: doc, router: router}, nil
})

// openAPIChecker checks responses against the document.
type openAPIChecker struct {
	doc    *openapi3.T
	router routers.Router
}

// checkResponse checks that the document allows the response to req: its
// status is documented for the operation, and its headers and body match
// the schema. A 404 from a path or method the document does not know (the
// catch-all route) and bodies that are not JSON are not checked.
func checkResponse(req *http.Request, resp *http.Response, body []byte) error {
	c, err := apiDoc()
	if err != nil {
		return err
	}
	// The document's server is "/": match on the path alone.
	req = req.Clone(req.Context())
	req.URL = &url.URL{Path: req.URL.Path, RawQuery: req.URL.RawQuery}
	route, params, err := c.router.FindRoute(req)
	if err != nil {
		if resp.StatusCode == http.StatusNotFound {
			return nil // the catch-all route
		}
		return fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	ct := resp.Header.Get("Content-Type")
	if ct != "" && !strings.Contains(ct, "json") {
		return nil
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route},
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	return openapi3filter.ValidateResponse(context.Background(), in)
}

func TestOpenAPIDocumentIsValid(t *testing.T) {
	t.Parallel()
	if _, err := apiDoc(); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
}

// paramName matches a path parameter of a route pattern or an OpenAPI path.
var paramName = regexp.MustCompile(`\{[^}]*\}`)

// normalizeRoute turns "GET /v1/skus/{id}" or a ServeMux pattern with
// wildcards ("{rest...}", "{$}") into "GET /v1/skus/{}", so that a route and
// a document path match whatever their parameters are called.
func normalizeRoute(method, path string) string {
	path = strings.ReplaceAll(path, "{$}", "")
	return strings.ToUpper(method) + " " + paramName.ReplaceAllString(path, "{}")
}

// TestOpenAPICoversEveryRoute checks that every route the server registers,
// including those of other files, is in the document.
func TestOpenAPICoversEveryRoute(t *testing.T) {
	t.Parallel()
	c, err := apiDoc()
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for path, item := range c.doc.Paths.Map() {
		for method := range item.Operations() {
			documented[normalizeRoute(method, path)] = true
		}
	}
	e := newTestEnv(t)
	routes := e.Server.Routes()
	if len(routes) < 15 {
		t.Fatalf("only %d routes registered: %v", len(routes), routes)
	}
	for _, r := range routes {
		method, path, ok := strings.Cut(r, " ")
		if !ok { // a pattern without a method serves every method
			method, path = "GET", r
		}
		if _, host, ok := strings.Cut(path, "/"); ok && !strings.HasPrefix(path, "/") {
			path = "/" + host // a pattern with a host
		}
		if !documented[normalizeRoute(method, path)] {
			t.Errorf("route %q is not in openapi.json", r)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	resp, body := e.do(t, "GET", "/openapi.json", "", nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if !bytes.Equal(body, openAPIDoc) {
		t.Error("GET /openapi.json does not serve the embedded document")
	}
}

// TestOpenAPIResponses sends requests that answer every success and problem
// status of the catalog routes and validates each response against the
// document explicitly (do also does on every request of every test).
func TestOpenAPIResponses(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, withoutOpenAPICheck())
	alice, admin := e.token(t, "alice"), e.adminToken(t)
	sku := e.createSKU(t, newSKU("Phone", 49900, 10))
	other := e.createSKU(t, order.NewSKU{Name: "Case", Price: ptr(int64(1500)), Currency: "EUR", Stock: ptr(int64(3)),
		PerUserLimit: ptr(int64(2)), PaymentHoldSeconds: ptr(int64(60))})
	addr := e.createAddress(t, alice, newAddress("Alice"))
	skuPath, addrPath := "/v1/skus/"+sku.ID.String(), "/v1/addresses/"+addr.ID.String()
	cartItem := "/v1/cart/items/" + sku.ID.String()

	cases := []struct {
		method, path, token string
		body                any
		want                int
	}{
		{"GET", "/healthz", "", nil, 200},
		{"GET", "/openapi.json", "", nil, 200},
		{"POST", "/v1/skus", admin, newSKU("Charger", 1999, 5), 201},
		{"POST", "/v1/skus", admin, `{"name":`, 400},
		{"POST", "/v1/skus", "", newSKU("x", 1, 1), 401},
		{"POST", "/v1/skus", alice, newSKU("x", 1, 1), 403},
		{"POST", "/v1/skus", admin, `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, 413},
		{"POST", "/v1/skus", admin, map[string]any{"name": "x", "price": -1}, 422},
		{"GET", "/v1/skus", alice, nil, 200},
		{"GET", "/v1/skus?limit=1", alice, nil, 200},
		{"GET", "/v1/skus?limit=0", alice, nil, 422},
		{"GET", skuPath, alice, nil, 200},
		{"GET", "/v1/skus/" + uuid.NewString(), alice, nil, 404},
		{"GET", "/v1/skus/not-a-uuid", alice, nil, 404},
		{"POST", "/v1/addresses", alice, newAddress("Alice B"), 201},
		{"POST", "/v1/addresses", alice, map[string]any{"country": "de"}, 422},
		{"GET", "/v1/addresses", alice, nil, 200},
		{"GET", addrPath, alice, nil, 200},
		{"GET", addrPath, e.token(t, "bob"), nil, 404},
		{"PUT", cartItem, alice, map[string]any{"quantity": 2}, 200},
		{"PUT", "/v1/cart/items/" + other.ID.String(), alice, map[string]any{"quantity": 1}, 200},
		{"PUT", cartItem, alice, map[string]any{"quantity": 0}, 422},
		{"PUT", cartItem, alice, `{"quantity":1,"x":1}`, 400},
		{"GET", "/v1/cart", alice, nil, 200},
		{"POST", "/v1/checkout/preview", alice, map[string]any{"items": []any{map[string]any{"sku_id": sku.ID, "quantity": 1}}}, 200},
		{"POST", "/v1/checkout/preview", alice, map[string]any{"cart_sku_ids": []any{sku.ID, other.ID}}, 200},
		{"POST", "/v1/checkout/preview", alice, map[string]any{"items": []any{map[string]any{"sku_id": sku.ID, "quantity": "abc"}}}, 422},
		{"POST", "/v1/checkout/preview", e.token(t, "nobody"), map[string]any{"items": []any{map[string]any{"sku_id": sku.ID, "quantity": 1}}}, 200},
		{"DELETE", cartItem, alice, nil, 204},
		{"DELETE", "/v1/cart", alice, nil, 204},
		{"DELETE", addrPath, alice, nil, 204},
		{"DELETE", addrPath, alice, nil, 404},
	}
	for _, c := range cases {
		resp, body := e.do(t, c.method, c.path, c.token, c.body)
		if resp.StatusCode != c.want {
			t.Errorf("%s %s: status %d, want %d; body %s", c.method, c.path, resp.StatusCode, c.want, body)
		}
		req, _ := http.NewRequest(c.method, e.URL+c.path, nil)
		if err := checkResponse(req, resp, body); err != nil {
			t.Errorf("%s %s (%d): %v\nbody: %s", c.method, c.path, resp.StatusCode, err, body)
		}
	}
}

// TestOpenAPICheckCanFail shows that checkResponse refuses responses that
// do not match the document: an undocumented field, a missing one, a
// wrong type and an undocumented status.
func TestOpenAPICheckCanFail(t *testing.T) {
	t.Parallel()
	id := uuid.NewString()
	good := map[string]any{"items": []any{map[string]any{"sku_id": id, "quantity": 1}}}
	cases := []struct {
		name   string
		status int
		body   any
	}{
		{"extra field", 200, map[string]any{"items": []any{}, "total": 1}},
		{"missing field", 200, map[string]any{}},
		{"wrong type", 200, map[string]any{"items": []any{map[string]any{"sku_id": id, "quantity": "1"}}}},
		{"undocumented status", 418, good},
		{"problem without status", 404, map[string]any{"type": "/problems/not-found", "title": "Not found"}},
	}
	req, _ := http.NewRequest("GET", "http://127.0.0.1/v1/cart", nil)
	if err := checkResponse(req, jsonResponse(200, "application/json"), mustJSON(t, good)); err != nil {
		t.Fatalf("a good response fails: %v", err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ct := "application/json"
			if c.status >= 400 {
				ct = "application/problem+json"
			}
			if err := checkResponse(req, jsonResponse(c.status, ct), mustJSON(t, c.body)); err == nil {
				t.Error("checkResponse accepted it")
			}
		})
	}
}

func jsonResponse(status int, ct string) *http.Response {
	return &http.Response{StatusCode: status, Header: http.Header{"Content-Type": {ct}}}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

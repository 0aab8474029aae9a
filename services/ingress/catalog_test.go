package ingress

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// catalogRoutesWant is every route catalogRoutes registers and whether only
// admins may call it.
var catalogRoutesWant = map[string]bool{
	"POST /v1/skus":                  true,
	"GET /v1/skus":                   false,
	"GET /v1/skus/{id}":              false,
	"POST /v1/addresses":             false,
	"GET /v1/addresses":              false,
	"GET /v1/addresses/{id}":         false,
	"DELETE /v1/addresses/{id}":      false,
	"GET /v1/cart":                   false,
	"PUT /v1/cart/items/{sku_id}":    false,
	"DELETE /v1/cart/items/{sku_id}": false,
	"DELETE /v1/cart":                false,
	"POST /v1/checkout/preview":      false,
}

// TestCatalogRoutesNeedTokens checks that every catalog route is
// registered, refuses a caller without a token, and, if it is an admin
// route, a user.
func TestCatalogRoutesNeedTokens(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t)
	routes := e.Server.Routes()
	user := e.token(t, "alice")
	before := e.snapshot(t)
	for route, adminOnly := range catalogRoutesWant {
		t.Run(route, func(t *testing.T) {
			if !slices.Contains(routes, route) {
				t.Fatalf("%s is not registered", route)
			}
			method, path := splitRoute(route)
			resp, body := e.do(t, method, path, "", `{}`)
			wantProblem(t, resp, body, http.StatusUnauthorized)
			if adminOnly {
				resp, body := e.do(t, method, path, user, `{}`)
				wantProblem(t, resp, body, http.StatusForbidden)
			}
		})
	}
	e.assertUnchanged(t, before)
}

// splitRoute turns "GET /v1/skus/{id}" into a method and a concrete path.
func splitRoute(route string) (string, string) {
	method, path, _ := strings.Cut(route, " ")
	return method, paramName.ReplaceAllString(path, uuid.NewString())
}

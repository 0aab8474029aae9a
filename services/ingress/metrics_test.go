package ingress

import (
	"fmt"
	"slices"
	"testing"

	"github.com/google/uuid"
)

// requestSeries returns the label values of orderd_http_requests_total's
// series: each series' route and method.
func requestSeries(t *testing.T, e *testEnv) (routes, methods map[string]bool) {
	t.Helper()
	mfs, err := e.Server.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	routes, methods = map[string]bool{}, map[string]bool{}
	for _, mf := range mfs {
		if mf.GetName() != "orderd_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					routes[l.GetValue()] = true
				case "method":
					methods[l.GetValue()] = true
				}
			}
		}
	}
	return routes, methods
}

// TestMetricsLabelsAreBounded sends requests with made-up methods and
// random paths, without a token, to the catch-all route and to real
// routes: the request metrics' method label takes only a fixed set of
// values and the route label only the routes' patterns, so that nobody
// can grow the number of series (each costs memory in this process and in
// Prometheus) by sending junk.
func TestMetricsLabelsAreBounded(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, withoutOpenAPICheck())
	for i := range 40 {
		method := fmt.Sprintf("JUNK%d", i)
		e.do(t, method, "/"+uuid.NewString(), "", nil)
		e.do(t, method, "/v1/skus", "", nil)
		e.do(t, method, "/v1/orders/"+uuid.NewString(), "", nil)
	}
	for _, m := range []string{"get", "Get", "PROPFIND", "TRACE", "CONNECTX", "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"} {
		e.do(t, m, "/v1/orders/"+uuid.NewString(), "", nil)
		e.do(t, m, "/nothing/"+uuid.NewString(), "", nil)
	}

	routes, methods := requestSeries(t, e)
	fixed := []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
	for m := range methods {
		if !slices.Contains(fixed, m) {
			t.Errorf("method label %q: want one of %v", m, fixed)
		}
	}
	if len(methods) > len(fixed) {
		t.Errorf("%d method label values, want at most %d", len(methods), len(fixed))
	}
	patterns := append(e.Server.Routes(), "unmatched")
	for r := range routes {
		if !slices.Contains(patterns, r) {
			t.Errorf("route label %q is not a route's pattern", r)
		}
	}
	if !methods["other"] || !routes["unmatched"] {
		t.Errorf("methods %v routes %v: want the junk counted as method other on route unmatched", methods, routes)
	}
}

func TestMethodLabel(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"GET": "GET", "HEAD": "HEAD", "POST": "POST", "PUT": "PUT", "PATCH": "PATCH",
		"DELETE": "DELETE", "OPTIONS": "OPTIONS", "get": "other", "TRACE": "other",
		"CONNECT": "other", "": "other", "JUNK": "other",
	} {
		if got := methodLabel(in); got != want {
			t.Errorf("methodLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestShedMeter: the meter counts checkout attempts by answer, ignores
// other routes, and adds "shed" to the JSON line without reordering it.
func TestShedMeter(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/orders" {
			w.WriteHeader(http.StatusOK)
			return
		}
		switch n.Add(1) % 4 {
		case 0:
			w.WriteHeader(http.StatusAccepted)
		case 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			w.WriteHeader(http.StatusConflict)
		}
	}))
	defer srv.Close()
	c := newClient(srv.URL, 4)
	m := meterShed(c)
	defer c.close()
	for range 8 {
		for _, p := range []string{"/v1/orders", "/v1/skus"} {
			resp, err := c.hc.Post(srv.URL+p, "application/json", strings.NewReader("{}"))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
	st := m.stats()
	if st.Attempts != 8 || st.Answers503 != 2 || st.Answers429 != 2 || st.Admitted != 2 || st.OtherAnswers != 2 || st.ShedShare != 0.5 {
		t.Errorf("stats %+v", st)
	}
	line := m.merge([]byte(`{"scenario":"hot-sku","S":1}`))
	if !strings.HasPrefix(string(line), `{"scenario":"hot-sku","S":1,"shed":{`) {
		t.Errorf("merged line %s", line)
	}
	var obj map[string]any
	if err := json.Unmarshal(line, &obj); err != nil {
		t.Fatalf("merged line %s: %v", line, err)
	}
}

package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestMedianOf(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{7}, 7},
		{[]float64{3, 1, 2}, 2},
		{[]float64{900, 100, 500}, 500},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{5, 5, 1}, 5},
	} {
		in := append([]float64(nil), c.in...)
		if got := medianOf(c.in); got != c.want {
			t.Errorf("medianOf(%v) = %v, want %v", c.in, got, c.want)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Errorf("medianOf changed its input: %v", c.in)
			}
		}
	}
}

func TestComputeMedians(t *testing.T) {
	in := strings.Join([]string{
		`{"scenario":"hot-sku","accept_per_s":1000,"decided_per_s":900,"rss_kb":50000}`,
		`not json, a log line`,
		`{"scenario":"hot-sku","accept_per_s":3000,"decided_per_s":700,"rss_kb":70000}`,
		``,
		`{"scenario":"hot-sku","accept_per_s":2000,"decided_per_s":800,"rss_kb":60000,"checks":{"a":"ok"}}`,
	}, "\n")
	m, err := computeMedians([]io.Reader{strings.NewReader(in)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.Runs != 3 {
		t.Errorf("runs %d, want 3", m.Runs)
	}
	want := map[string]float64{"accept_per_s": 2000, "decided_per_s": 800, "rss_kb": 60000}
	for k, v := range want {
		if m.Values[k] != v {
			t.Errorf("%s = %v, want %v", k, m.Values[k], v)
		}
	}
	if _, ok := m.Values["scenario"]; ok {
		t.Error("a string key has a median")
	}
	b, _ := json.Marshal(m)
	if got := string(b); got != `{"runs":3,"accept_per_s":2000,"decided_per_s":800,"rss_kb":60000}` {
		t.Errorf("JSON %s", got)
	}

	m, err = computeMedians([]io.Reader{strings.NewReader(in)}, []string{"rss_kb", "accept_per_s"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(m); string(b) != `{"runs":3,"rss_kb":60000,"accept_per_s":2000}` {
		t.Errorf("JSON with keys %s", b)
	}
	m, err = computeMedians([]io.Reader{strings.NewReader(in)}, []string{"accept_per_s", "nope?", "cpu.orderd?"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(m); string(b) != `{"runs":3,"accept_per_s":2000}` {
		t.Errorf("JSON with optional keys missing %s", b)
	}
	nested := `{"cpu":{"orderd":300,"nats":10},"x":1}` + "\n" + `{"cpu":{"orderd":100},"x":2}` + "\n" + `{"x":3}`
	m, err = computeMedians([]io.Reader{strings.NewReader(nested)}, []string{"cpu.orderd?", "cpu.nats?", "cpu.redis?"})
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := json.Marshal(m); string(b) != `{"runs":3,"cpu.orderd":200,"cpu.nats":10}` {
		t.Errorf("JSON of nested keys %s", b)
	}
	if _, err := computeMedians([]io.Reader{strings.NewReader(in)}, []string{"nope"}); err == nil {
		t.Error("a missing key is not an error")
	}
	if _, err := computeMedians([]io.Reader{strings.NewReader("hello\n")}, nil); err == nil {
		t.Error("no objects is not an error")
	}
}

func TestMedianCommand(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl")
	os.WriteFile(a, []byte("{\"x\":1,\"y\":10}\n{\"x\":2,\"y\":30}\n"), 0o644)
	os.WriteFile(b, []byte("{\"x\":9,\"y\":20}\n"), 0o644)
	var stdout, stderr strings.Builder
	code := run(t.Context(), []string{"median", "--keys", "x,y", a, b}, func(string) string { return "" }, &stdout, &stderr, false)
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if got := strings.TrimSpace(stdout.String()); got != `{"runs":3,"x":2,"y":20}` {
		t.Errorf("stdout %s", got)
	}
	stdout.Reset()
	if code := run(t.Context(), []string{"median", filepath.Join(dir, "missing")}, nil, &stdout, &stderr, false); code != exitUsage {
		t.Errorf("missing file: exit %d, want %d", code, exitUsage)
	}
	if code := run(t.Context(), []string{"median"}, nil, &stdout, &stderr, false); code != exitUsage {
		t.Errorf("no file: exit %d, want %d", code, exitUsage)
	}
}

package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestReportRenders(t *testing.T) {
	for _, scenario := range []string{ScenarioHotSKU, ScenarioPreview} {
		t.Run(scenario, func(t *testing.T) {
			r := fakeRun(t)
			r.cfg.Scenario = scenario
			s := summarize(r)
			s.addChecks(fail(CheckStockConservation, "SKU x: <3 & 4>"))
			per, secs, window := 812.5, 3.25, 4.1
			s.ServerCPUPerOrder = &per
			s.ServerCPU = ServerCPU{PerOrderSplit: map[string]float64{"orderd": 600, "postgres": 212.5},
				SecondsSplit: map[string]float64{"orderd": 2.4, "postgres": 0.85}, Seconds: &secs, WindowS: &window,
				Processes: map[string]int{"orderd": 1, "postgres": 9}, Note: "no redis-server, nats-server process"}
			var buf bytes.Buffer
			if err := renderReport(&buf, s, buildTimeline(r.start, r.end.Sub(r.start), r.outs, r.stock), time.Now()); err != nil {
				t.Fatal(err)
			}
			page := buf.String()

			// Well formed: the page is written so that an XML parser reads it.
			dec := xml.NewDecoder(strings.NewReader(page))
			dec.Strict = true
			for {
				_, err := dec.Token()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("not well formed: %v\n%s", err, page)
				}
			}
			wantCharts := 4
			if scenario == ScenarioPreview {
				wantCharts = 2
			}
			if n := strings.Count(page, "<svg"); n != wantCharts {
				t.Errorf("%d charts, want %d", n, wantCharts)
			}
			if !strings.Contains(page, "<polyline") {
				t.Error("no line drawn")
			}
			// Self-contained: nothing is loaded from anywhere.
			for _, re := range []string{`(?i)<script`, `(?i)\bsrc=`, `(?i)<link`, `(?i)url\(`, `(?i)@import`, `(?i)href=`, `(?i)https?://`} {
				if m := regexp.MustCompile(re).FindString(page); m != "" {
					t.Errorf("the page references something outside it: %q", m)
				}
			}
			for _, want := range []string{"Server CPU per order", "<td>postgres</td><td class=\"num\">212.5</td><td class=\"num\">0.85</td><td class=\"num\">9</td>",
				"<td>total</td><td class=\"num\">812.5</td>", "no redis-server, nats-server process"} {
				if !strings.Contains(page, want) {
					t.Errorf("the page has no %q", want)
				}
			}
			if !strings.Contains(page, "FAILED: SKU x: &lt;3 &amp; 4&gt;") {
				t.Error("the failed check is not shown, escaped")
			}
		})
	}
}

func TestChartWithoutData(t *testing.T) {
	svg := string(lineChart{Title: "empty", Series: []series{{Name: "a", Color: colorRed}}}.SVG())
	if !strings.Contains(svg, "no data") || strings.Contains(svg, "NaN") {
		t.Errorf("empty chart: %s", svg)
	}
}

func TestTicks(t *testing.T) {
	tests := []struct {
		hi      float64
		wantTop float64
		wantN   int
	}{
		{0, 1, 6}, {1, 1, 6}, {7, 8, 5}, {93, 100, 6}, {10000, 10000, 6}, {12345, 15000, 4},
	}
	for _, tt := range tests {
		ts, top := ticks(tt.hi)
		if top != tt.wantTop || len(ts) != tt.wantN || ts[0] != 0 {
			t.Errorf("ticks(%g) = %v, top %g; want %d ticks up to %g", tt.hi, ts, top, tt.wantN, tt.wantTop)
		}
	}
}

package main

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"sort"
	"strings"
	"time"
)

// Colors of the report's series.
const (
	colorBlue   = "#1f77b4"
	colorOrange = "#ff7f0e"
	colorGreen  = "#2ca02c"
	colorRed    = "#d62728"
)

type reportCheck struct {
	Name, Result string
	Failed       bool
}

type reportRow struct{ Key, Value string }

type reportData struct {
	Title     string
	Generated string
	Summary   []reportRow
	Checks    []reportCheck
	CPU       []cpuRow // the server's CPU per order, by process kind; the total last
	CPUNote   string
	CPUWindow string
	Charts    []template.HTML
	JSON      string
}

var reportTmpl = template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8"/>
<meta name="viewport" content="width=device-width, initial-scale=1"/>
<title>{{.Title}}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; max-width: 1100px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 3px 10px; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1a7f37; } .failed { color: #b42318; font-weight: bold; }
svg.chart { display: block; margin: 12px 0; max-width: 100%; height: auto; }
svg .grid { stroke: #e5e5e5; stroke-width: 1; }
svg .frame { fill: none; stroke: #999; }
svg .tick, svg .legend { font-size: 11px; fill: #444; }
svg .label { font-size: 12px; fill: #222; }
svg .title { font-size: 14px; font-weight: bold; fill: #222; }
pre { background: #f6f6f6; padding: 8px; white-space: pre-wrap; word-break: break-all; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p>Generated {{.Generated}} by flashbench.</p>
<h2>Checks</h2>
{{if .Checks}}<table>
<tr><th>check</th><th>result</th></tr>
{{range .Checks}}<tr><td>{{.Name}}</td><td class="{{if .Failed}}failed{{else}}ok{{end}}">{{.Result}}</td></tr>
{{end}}</table>{{else}}<p>No checks for this scenario.</p>{{end}}
{{if or .CPU .CPUNote}}<h2>Server CPU per order</h2>
{{if .CPU}}<p>User + system CPU of the server's processes (/proc) from the first checkout sent to the last answered ({{.CPUWindow}} s), divided by the orders decided.</p>
<table>
<tr><th>processes</th><th>µs per order</th><th>CPU seconds</th><th>processes seen</th></tr>
{{range .CPU}}<tr><td>{{.Kind}}</td><td class="num">{{.PerOrder}}</td><td class="num">{{.Seconds}}</td><td class="num">{{.Procs}}</td></tr>
{{end}}</table>{{end}}
{{if .CPUNote}}<p>{{.CPUNote}}</p>{{end}}{{end}}
<h2>Charts</h2>
{{range .Charts}}{{.}}
{{end}}
<h2>Summary</h2>
<table>
{{range .Summary}}<tr><td>{{.Key}}</td><td class="num">{{.Value}}</td></tr>
{{end}}</table>
<h2>JSON line</h2>
<pre>{{.JSON}}</pre>
</body>
</html>
`))

// writeReport writes the run's self-contained HTML report to path.
func writeReport(path string, s *Summary, tl Timeline) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	if err := renderReport(f, s, tl, time.Now()); err != nil {
		f.Close()
		return fmt.Errorf("write report: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write report: %w", err)
	}
	return nil
}

// renderReport renders the report: the checks, the charts (throughput,
// latency percentiles and stock over time, one point per second) and the
// summary. It uses no script and loads nothing: it reads offline.
func renderReport(w io.Writer, s *Summary, tl Timeline, now time.Time) error {
	d := reportData{
		Title:     fmt.Sprintf("flashbench %s: S=%d N=%d C=%d (run %s)", s.Scenario, s.S, s.N, s.C, s.RunID),
		Generated: now.UTC().Format(time.RFC3339),
		JSON:      string(s.JSON()),
	}
	names := make([]string, 0, len(s.Checks))
	for n := range s.Checks {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		d.Checks = append(d.Checks, reportCheck{Name: n, Result: s.Checks[n], Failed: strings.HasPrefix(s.Checks[n], "FAILED")})
	}
	d.Summary = summaryRows(s)
	d.CPU, d.CPUNote = cpuRows(s), s.ServerCPU.Note
	if s.ServerCPU.WindowS != nil {
		d.CPUWindow = fmt.Sprint(*s.ServerCPU.WindowS)
	}
	d.Charts = charts(s.Scenario, tl)
	return reportTmpl.Execute(w, d)
}

// summaryRows flattens the summary's JSON into rows, in the JSON's order.
func summaryRows(s *Summary) []reportRow {
	var rows []reportRow
	dec := json.NewDecoder(strings.NewReader(string(s.JSON())))
	dec.UseNumber()
	dec.Token() // {
	for dec.More() {
		k, _ := dec.Token()
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			break
		}
		key := fmt.Sprint(k)
		if key == "checks" {
			continue // its own table
		}
		rows = append(rows, reportRow{Key: key, Value: strings.Trim(string(v), `"`)})
	}
	return rows
}

func charts(scenario string, tl Timeline) []template.HTML {
	// perSecond is a rate series: one point per second, the last, partial
	// second scaled to a full one.
	perSecond := func(name, color string, count func(Second) int) series {
		s := series{Name: name, Color: color}
		for i, sec := range tl.Seconds {
			if v, ok := tl.PerSecond(i, count(sec)); ok {
				s.X, s.Y = append(s.X, float64(i)), append(s.Y, v)
			}
		}
		return s
	}
	// Latency percentiles only for seconds in which something completed.
	lat := func(name, color string, count func(Second) int, q func(Second) float64) series {
		s := series{Name: name, Color: color}
		for i, sec := range tl.Seconds {
			if count(sec) > 0 {
				s.X, s.Y = append(s.X, float64(i)), append(s.Y, q(sec))
			}
		}
		return s
	}
	span := tl.Span.Seconds()
	acc := func(s Second) int { return s.Accepted }
	dec := func(s Second) int { return s.Decided }

	if scenario == ScenarioPreview {
		return []template.HTML{
			lineChart{Title: "Previews answered per second", XLabel: "seconds since start", XMax: span, YLabel: "per second", Series: []series{
				perSecond("previews/s", colorBlue, acc),
			}}.SVG(),
			lineChart{Title: "Preview latency percentiles", XLabel: "seconds since start", XMax: span, YLabel: "ms", Series: []series{
				lat("p50", colorGreen, acc, func(s Second) float64 { return s.AcceptQ[0] }),
				lat("p90", colorOrange, acc, func(s Second) float64 { return s.AcceptQ[1] }),
				lat("p99", colorRed, acc, func(s Second) float64 { return s.AcceptQ[2] }),
			}}.SVG(),
		}
	}
	stock := series{Name: "stock left", Color: colorBlue}
	for _, p := range tl.Stock {
		stock.X, stock.Y = append(stock.X, p.At.Seconds()), append(stock.Y, float64(p.Left))
	}
	return []template.HTML{
		lineChart{Title: "Orders accepted and decided per second", XLabel: "seconds since start", XMax: span, YLabel: "orders per second", Series: []series{
			perSecond("accepted/s", colorBlue, acc),
			perSecond("decided/s", colorOrange, dec),
		}}.SVG(),
		lineChart{Title: "Accept latency (send to 202) by second answered", XLabel: "seconds since start", XMax: span, YLabel: "ms", Series: []series{
			lat("p50", colorGreen, acc, func(s Second) float64 { return s.AcceptQ[0] }),
			lat("p90", colorOrange, acc, func(s Second) float64 { return s.AcceptQ[1] }),
			lat("p99", colorRed, acc, func(s Second) float64 { return s.AcceptQ[2] }),
		}}.SVG(),
		lineChart{Title: "Decide latency (send to decision seen) by second decided", XLabel: "seconds since start", XMax: span, YLabel: "ms", Series: []series{
			lat("p50", colorGreen, dec, func(s Second) float64 { return s.DecideQ[0] }),
			lat("p90", colorOrange, dec, func(s Second) float64 { return s.DecideQ[1] }),
			lat("p99", colorRed, dec, func(s Second) float64 { return s.DecideQ[2] }),
		}}.SVG(),
		lineChart{Title: "Stock left (all SKUs of the run)", XLabel: "seconds since start", XMax: span, YLabel: "units", Series: []series{stock}}.SVG(),
	}
}

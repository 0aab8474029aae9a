package main

import (
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
)

// series is one line of a chart.
type series struct {
	Name  string
	Color string
	X, Y  []float64
}

// lineChart is an SVG line chart with a linear time axis.
type lineChart struct {
	Title, XLabel, YLabel string
	Series                []series
	Width, Height         int
	XMax                  float64 // the least extent of the x axis, so that charts of one run line up
}

const (
	chartLeft, chartRight, chartTop, chartBottom = 64, 16, 48, 44
)

// SVG renders the chart as an inline <svg> element, needing nothing from
// outside the page.
func (c lineChart) SVG() template.HTML {
	if c.Width == 0 {
		c.Width, c.Height = 760, 280
	}
	xmax, ymax := c.XMax, 0.0
	points := 0
	for _, s := range c.Series {
		for i := range s.X {
			xmax, ymax = math.Max(xmax, s.X[i]), math.Max(ymax, s.Y[i])
			points++
		}
	}
	xticks, xmax := ticks(xmax)
	yticks, ymax := ticks(ymax)
	pw, ph := float64(c.Width-chartLeft-chartRight), float64(c.Height-chartTop-chartBottom)
	px := func(x float64) float64 { return chartLeft + x/xmax*pw }
	py := func(y float64) float64 { return chartTop + ph - y/ymax*ph }

	var b strings.Builder
	esc := template.HTMLEscapeString
	fmt.Fprintf(&b, `<svg class="chart" role="img" viewBox="0 0 %d %d" width="%d" height="%d">`, c.Width, c.Height, c.Width, c.Height)
	fmt.Fprintf(&b, `<title>%s</title>`, esc(c.Title))
	fmt.Fprintf(&b, `<text x="%d" y="20" class="title">%s</text>`, chartLeft, esc(c.Title))
	for _, t := range yticks {
		y := py(t)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" class="grid"/>`, chartLeft, y, chartLeft+pw, y)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" class="tick" text-anchor="end">%s</text>`, chartLeft-6, y+4, esc(formatTick(t)))
	}
	for _, t := range xticks {
		x := px(t)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" class="grid"/>`, x, chartTop, x, chartTop+ph)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="tick" text-anchor="middle">%s</text>`, x, chartTop+ph+16, esc(formatTick(t)))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.1f" height="%.1f" class="frame"/>`, chartLeft, chartTop, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" class="label" text-anchor="middle">%s</text>`, chartLeft+pw/2, c.Height-6, esc(c.XLabel))
	fmt.Fprintf(&b, `<text x="14" y="%.1f" class="label" text-anchor="middle" transform="rotate(-90 14 %.1f)">%s</text>`, chartTop+ph/2, chartTop+ph/2, esc(c.YLabel))
	if points == 0 {
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" class="label" text-anchor="middle">no data</text>`, chartLeft+pw/2, chartTop+ph/2)
	}
	for i, s := range c.Series {
		lx := float64(chartLeft + i*120) // the legend: one row under the title
		fmt.Fprintf(&b, `<rect x="%.1f" y="30" width="12" height="4" fill="%s"/>`, lx, esc(s.Color))
		fmt.Fprintf(&b, `<text x="%.1f" y="36" class="legend">%s</text>`, lx+16, esc(s.Name))
		if len(s.X) == 0 {
			continue
		}
		b.WriteString(`<polyline fill="none" stroke-width="2" stroke="` + esc(s.Color) + `" points="`)
		for j := range s.X {
			if j > 0 {
				b.WriteByte(' ')
			}
			fmt.Fprintf(&b, "%.1f,%.1f", px(s.X[j]), py(s.Y[j]))
		}
		b.WriteString(`"/>`)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every piece of text above is escaped
}

// ticks returns about five round tick values from 0 to at least hi, and the
// axis' upper bound (the last tick).
func ticks(hi float64) ([]float64, float64) {
	if hi <= 0 || math.IsNaN(hi) || math.IsInf(hi, 0) {
		hi = 1
	}
	step := niceStep(hi / 5)
	top := math.Ceil(hi/step) * step
	var out []float64
	for v := 0.0; v <= top+step/2; v += step {
		out = append(out, v)
	}
	return out, top
}

// niceStep rounds x up to 1, 2 or 5 times a power of ten.
func niceStep(x float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(x)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= x {
			return m * p
		}
	}
	return 10 * p
}

func formatTick(v float64) string {
	switch {
	case v >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case v >= 1e4:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
)

// The median subcommand summarizes repeated runs:
//
//	flashbench median [--keys k1,k2] FILE...
//
// Each FILE holds JSON lines (flashbench's summaries, or any JSON objects);
// lines that are not JSON objects are skipped. It prints one JSON object:
// for every numeric key (or only --keys, in that order of preference), the
// median of its values over all lines, and "runs", the number of objects
// read. With an even number of values the median is the mean of the two
// middle ones. A number inside an object is named by its path:
// "server_cpu_us_per_order_split.orderd". A key of --keys that ends in "?"
// is left out when no line has it (the server CPU, not measured when the
// server runs elsewhere); any other key missing is an error.

// medianOf returns the median of xs (0 for none), without changing xs.
func medianOf(xs []float64) float64 {
	n := len(xs)
	if n == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// collectNumbers reads JSON lines from r and collects the numeric values by key.
// It returns the values and the number of objects read.
func collectNumbers(r io.Reader, into map[string][]float64) (int, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	runs := 0
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			continue
		}
		runs++
		addNumbers("", m, into)
	}
	return runs, sc.Err()
}

// addNumbers collects the numbers of m, those of nested objects by path.
func addNumbers(prefix string, m map[string]any, into map[string][]float64) {
	for k, v := range m {
		switch v := v.(type) {
		case float64:
			into[prefix+k] = append(into[prefix+k], v)
		case map[string]any:
			addNumbers(prefix+k+".", v, into)
		}
	}
}

// Medians is the median of each numeric key over runs JSON objects.
type Medians struct {
	Runs   int
	Values map[string]float64
	keys   []string // the keys to print, in order
}

// MarshalJSON prints "runs" then the keys in order.
func (m Medians) MarshalJSON() ([]byte, error) {
	var b strings.Builder
	fmt.Fprintf(&b, `{"runs":%d`, m.Runs)
	for _, k := range m.keys {
		kb, _ := json.Marshal(k)
		vb, err := json.Marshal(round2(m.Values[k]))
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, ",%s:%s", kb, vb)
	}
	b.WriteString("}")
	return []byte(b.String()), nil
}

// computeMedians reads every reader's JSON lines and returns the medians of
// keys (every numeric key, sorted, when keys is empty). A key asked for but
// never seen is an error.
func computeMedians(readers []io.Reader, keys []string) (Medians, error) {
	vals := map[string][]float64{}
	runs := 0
	for _, r := range readers {
		n, err := collectNumbers(r, vals)
		if err != nil {
			return Medians{}, err
		}
		runs += n
	}
	if runs == 0 {
		return Medians{}, errors.New("no JSON objects in the input")
	}
	if len(keys) == 0 {
		for k := range vals {
			keys = append(keys, k)
		}
		sort.Strings(keys)
	}
	m := Medians{Runs: runs, Values: map[string]float64{}}
	for _, k := range keys {
		k, optional := strings.CutSuffix(k, "?")
		v, ok := vals[k]
		switch {
		case !ok && optional:
			continue
		case !ok:
			return Medians{}, fmt.Errorf("no numeric value of %q in the input", k)
		}
		m.Values[k] = medianOf(v)
		m.keys = append(m.keys, k)
	}
	return m, nil
}

// runMedian is the median subcommand.
func runMedian(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("flashbench median", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keys := fs.String("keys", "", "comma-separated keys to report, a.b for b inside a, k? for a key that may be missing (default: every numeric key)")
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: flashbench median [--keys k1,k2] FILE...\n\nPrints one JSON object: the median of each numeric key over the JSON lines of the files (- is stdin), and runs.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	var readers []io.Reader
	for _, name := range fs.Args() {
		if name == "-" {
			readers = append(readers, os.Stdin)
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(stderr, "flashbench median: %v\n", err)
			return exitUsage
		}
		defer f.Close()
		readers = append(readers, f)
	}
	var ks []string
	for _, k := range strings.Split(*keys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			ks = append(ks, k)
		}
	}
	m, err := computeMedians(readers, ks)
	if err != nil {
		fmt.Fprintf(stderr, "flashbench median: %v\n", err)
		return exitFailed
	}
	b, _ := json.Marshal(m)
	fmt.Fprintf(stdout, "%s\n", b)
	return exitOK
}

package ingress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flashsale/orderd/pkg/auth"
	"github.com/flashsale/orderd/pkg/natsbus"
	"github.com/flashsale/orderd/pkg/order"
	"github.com/flashsale/orderd/services/worker"
)

// chromiumPackage is the Debian package of the browser the operator page's
// test drives (scripts/deps.sh installs it).
const chromiumPackage = "chromium"

// findChromium returns the path of a Chromium or Chrome binary. Where none
// is installed and the test runs as root on a system with apt-get, it
// installs the Debian package first, as scripts/deps.sh would; otherwise
// the test is skipped, naming the package to install.
func findChromium(t *testing.T) string {
	t.Helper()
	look := func() string {
		for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
			if p, err := exec.LookPath(name); err == nil {
				return p
			}
		}
		return ""
	}
	if p := look(); p != "" {
		return p
	}
	skip := fmt.Sprintf("the operator page test needs Chromium: install the Debian package %s "+
		"(apt-get install -y %s, or run scripts/deps.sh as root)", chromiumPackage, chromiumPackage)
	if _, err := exec.LookPath("apt-get"); err != nil || os.Geteuid() != 0 {
		t.Skip(skip)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	install := func() error {
		cmd := exec.CommandContext(ctx, "apt-get", "install", "-y", "-qq", chromiumPackage)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	t.Logf("installing %s with apt-get", chromiumPackage)
	if err := install(); err != nil {
		if out, uerr := exec.CommandContext(ctx, "apt-get", "update", "-qq").CombinedOutput(); uerr != nil {
			t.Skipf("%s (apt-get update failed: %v: %s)", skip, uerr, out)
		}
		if err := install(); err != nil {
			t.Skipf("%s (apt-get install failed: %v)", skip, err)
		}
	}
	if p := look(); p != "" {
		return p
	}
	t.Skip(skip)
	return ""
}

// operatorEnv is the whole stack in one process: an ingress with the
// operator page, its feed and the SKU notes, the dead letter routes, and a
// worker that applies the commands and relays the events.
func newOperatorEnv(t *testing.T) *orderEnv {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	var notes *natsbus.SKUNotes
	e := newOrderEnv(t, withOpsFeed(t), withAdminOps, func(e *orderEnv, cfg *Config, d *Deps) {
		cfg.PublishTimeout = 10 * time.Second // a loaded machine fsyncs slowly
		d.SKUAdmin = d.SKUs.(SKUAdminStore)
		notes = natsbus.NewSKUNotes(e.NC, log)
		d.SKUNotes = notes
	})
	sub, err := notes.Subscribe(e.Server.SKUChanged)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })

	nc, err := nats.Connect(e.NATS.ClientURL(), nats.Name("worker"), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(worker.Config{Name: "w1", Partitions: e.Server.cfg.Partitions, PinnedTTL: 2 * time.Second, AckWait: 5 * time.Second},
		worker.Deps{Log: slog.New(slog.NewTextHandler(tbWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})),
			DB: e.DB, NC: nc, JS: js, Redis: e.Redis, Registry: prometheus.NewRegistry(), DatabaseURL: e.DSN})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("worker: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("the worker did not stop within 30s")
		}
	})
	return e
}

// screenshotPath is where the test writes the page's screenshot: in
// $ARTIFACTS_DIR if set, else in the system's temporary directory.
func screenshotPath() string {
	dir := os.Getenv("ARTIFACTS_DIR")
	if dir == "" {
		dir = os.TempDir()
	}
	return filepath.Join(dir, fmt.Sprintf("orderd-operator-page-%s.png", time.Now().UTC().Format("20060102T150405")))
}

// TestOperatorPageBrowser drives the operator page in headless Chromium
// against a real stack: it logs in with an admin token (a user's is
// refused), watches a small sale move the counters, pauses the SKU and sees
// a checkout refused, resumes it, replays a dead letter, and writes a
// screenshot. Every wait is a poll of the page with a generous timeout: no
// step depends on how fast the machine is.
func TestOperatorPageBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser: not in -short mode")
	}
	chromium := findChromium(t)
	e := newOperatorEnv(t)
	admin, user := e.adminToken(t), e.token(t, "mallory")
	const stock, buyers = 30, 36
	sku := e.createSKU(t, newSKU("Flash sneaker", 12900, stock))
	e.createSKU(t, newSKU("Limited hoodie", 5900, 250))
	p := order.Partition(sku.ID, e.Server.cfg.Partitions)

	br := openBrowser(t, chromium)
	ctx, step, until := br.ctx, br.step, br.until
	shot := br.shot
	text := func(sel string) string { return fmt.Sprintf(`(document.querySelector(%q)||{}).textContent`, sel) }
	skuRow := fmt.Sprintf(`tr[data-sku="%s"]`, sku.ID)

	// The first Run starts the browser: no timeout on it.
	if err := chromedp.Do(ctx, chromedp.Navigate(e.URL+"/admin/")); err != nil {
		t.Fatalf("open the page in chromium %s: %v", chromium, err)
	}

	// A user's token is refused; an admin's opens the dashboard.
	step("log in as a user", 2*time.Minute,
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), user),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("login-error")),
	)
	until("the refusal names the reason", text("#login-error")+`.includes("not an admin")`)
	step("log in as an admin", 2*time.Minute,
		chromedp.SendKeys(chromedp.ID("token"), admin),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("dashboard")),
		chromedp.WaitVisible(chromedp.CSS(skuRow)),
	)
	until("the stream is live", text("#status")+` === "live"`)
	until("the SKU's stock shows", text(skuRow+" .stock")+` === "30"`)
	stored, err := chromedp.Run(ctx, chromedp.Evaluate[string](`sessionStorage.getItem("orderd.adminToken") + " " + location.href`))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, admin+" ") || strings.Contains(stored[len(admin):], admin) {
		t.Errorf("sessionStorage and URL: %q, want the token in sessionStorage only", stored)
	}

	// A small sale: more buyers than stock, one unit each.
	body := func(b buyer) map[string]any { return directBody(b, order.LineRequest{SKUID: sku.ID, Quantity: 1}) }
	// Refreshing docs/operator-page.png: spread the sale over a few
	// seconds, so that the chart shows a line rather than one spike.
	pace := time.Duration(0)
	if os.Getenv("ORDERD_OPERATOR_SCREENSHOT") != "" {
		pace = 250 * time.Millisecond
	}
	for range buyers {
		b := e.newBuyer(t)
		e.mustCheckout(t, b, body(b), "")
		time.Sleep(pace)
	}
	until("units sold and stock left", text(skuRow+" .units-sold")+` === "30" && `+text(skuRow+" .stock")+` === "0"`)
	until("accepted and decided", text("#accepted-total")+` === "36" && `+text("#decided-total")+` === "36"`)
	until("confirmed and rejected", text("#confirmed-total")+` === "30" && `+text("#rejected-total")+` === "6"`)
	until("the reject reason", text(`#reasons tr[data-reason="out_of_stock"] .count`)+` === "6"`)
	until("the partition's pinned worker, by name", fmt.Sprintf(`/^w1( |$)/.test(%s||"")`, text(fmt.Sprintf(`#partitions tr[data-partition="%d"] .pinned`, p))))
	until("the chart has points", `document.getElementById("chart").width > 0`)

	// The kill switch: paused, a checkout is refused; resumed, accepted.
	pauseSwitch := fmt.Sprintf(`button.pause-switch[data-sku="%s"]`, sku.ID)
	step("press pause", time.Minute, chromedp.Click(chromedp.CSS(pauseSwitch)))
	until("the switch shows paused", fmt.Sprintf(`document.querySelector(%q).getAttribute("aria-checked") === "true"`, pauseSwitch))
	late := e.newBuyer(t)
	resp, data := e.checkout(t, late, body(late), "")
	if p := wantProblem(t, resp, data, http.StatusConflict); !strings.HasSuffix(p.Type, "sale-paused") {
		t.Errorf("checkout while paused: problem type %q, want .../sale-paused", p.Type)
	}
	step("press resume", time.Minute, chromedp.Click(chromedp.CSS(pauseSwitch)))
	until("the switch shows on sale", fmt.Sprintf(`document.querySelector(%q).getAttribute("aria-checked") === "false"`, pauseSwitch))
	e.mustCheckout(t, late, body(late), "")
	until("the late checkout is counted", text("#accepted-total")+` === "37" && `+text("#decided-total")+` === "37"`)

	// A dead letter: a message no partition can decode. The worker records
	// it; the page shows it with a replay button.
	if _, err := e.JS.Publish(context.Background(), order.Subject(p), []byte("not a command envelope")); err != nil {
		t.Fatal(err)
	}
	until("the dead letter shows", `document.querySelector("#dead-letters tr[data-dead-letter] button.replay") !== null`)
	id, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("#dead-letters tr[data-dead-letter]").dataset.deadLetter`))
	if err != nil {
		t.Fatal(err)
	}
	row := fmt.Sprintf(`#dead-letters tr[data-dead-letter="%s"]`, id)
	step("press replay", time.Minute, chromedp.Click(chromedp.CSS(row+" button.replay")))
	until("the dead letter is marked replayed", text(row+" .dl-status")+`.startsWith("replayed")`)
	var page deadLetterPage
	e.mustDo(t, "GET", "/v1/admin/dead-letters", admin, nil, http.StatusOK, &page)
	replayed := false
	for _, d := range page.Items {
		if fmt.Sprint(d.ID) == id {
			replayed = d.ReplayedAt != nil
		}
	}
	if !replayed {
		t.Errorf("dead letter %s is not replayed in the API: %+v", id, page.Items)
	}
	// The replayed poison fails again: a new dead letter, the old one stays
	// marked.
	until("the replay's own dead letter", fmt.Sprintf(`document.querySelectorAll("#dead-letters tr[data-dead-letter]").length >= 2 && %s.startsWith("replayed")`, text(row+" .dl-status")))

	// A reload keeps the session (the token is in sessionStorage).
	step("reload", 2*time.Minute, chromedp.Navigate(e.URL+"/admin/"), chromedp.WaitVisible(chromedp.CSS(skuRow)))
	until("live again", text("#status")+` === "live" && `+text("#accepted-total")+` === "37"`)
	// Let the chart draw a few more points.
	step("chart", time.Minute, chromedp.Sleep(3*time.Second))
	path := shot()
	if path == "" {
		t.Fatal("no screenshot")
	}
	t.Logf("screenshot of the operator page: %s", path)
	if dst := os.Getenv("ORDERD_OPERATOR_SCREENSHOT"); dst != "" { // to refresh docs/operator-page.png
		if data, err := os.ReadFile(path); err == nil {
			if err := os.WriteFile(dst, data, 0o644); err != nil {
				t.Errorf("copy the screenshot: %v", err)
			}
		}
	}
}

// browser is a headless Chromium tab for a page test.
type browser struct {
	t   *testing.T
	ctx context.Context
}

// openBrowser starts chromium headless; it is stopped when the test ends.
// Any script error on the page fails the test.
func openBrowser(t *testing.T, chromium string) *browser {
	t.Helper()
	root, stop := context.WithTimeout(context.Background(), 10*time.Minute)
	t.Cleanup(stop)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(root,
		chromedp.ExecPath(chromium),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.WindowSize(1280, 1500),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancelCtx := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelCtx)

	var mu sync.Mutex
	var pageErrors []string
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	console := chromedp.Events(ctx, runtime.ConsoleAPICalled)
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil {
				msg += " " + d.Exception.Description
			}
			mu.Lock()
			pageErrors = append(pageErrors, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber, msg))
			mu.Unlock()
		}
	}()
	go func() {
		for ev, err := range console {
			if err != nil {
				return
			}
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				mu.Lock()
				pageErrors = append(pageErrors, "console.error")
				mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, pe := range pageErrors {
			t.Errorf("page: %s", pe)
		}
	})
	return &browser{t: t, ctx: ctx}
}

// shot writes a screenshot of the page and returns its path ("" if it
// could not).
func (b *browser) shot() string {
	t := b.t
	sctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	buf, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Logf("screenshot: %v", err)
		return ""
	}
	path := screenshotPath()
	if err := os.WriteFile(path, buf, 0o644); err != nil {
		t.Logf("screenshot: %v", err)
		return ""
	}
	return path
}

// step runs actions within timeout; on failure it saves a screenshot and
// the page's text, and stops the test.
func (b *browser) step(what string, timeout time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	sctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	if err := chromedp.Do(sctx, actions...); err != nil {
		text, _ := chromedp.Run(b.ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText : ""`))
		b.t.Fatalf("%s: %v\nscreenshot: %s\npage text:\n%s", what, err, b.shot(), text)
	}
}

// until polls a JavaScript condition of the page.
func (b *browser) until(what, js string) {
	b.t.Helper()
	b.step(what, 3*time.Minute, chromedp.Poll[chromedp.Void](js,
		chromedp.WithPollingInterval(100*time.Millisecond), chromedp.WithPollingTimeout(2*time.Minute)))
}

// textOf is the JavaScript of the text of the element sel ("" if none).
func textOf(sel string) string {
	return fmt.Sprintf(`((document.querySelector(%q)||{}).textContent||"")`, sel)
}

// TestOperatorPageTokenRenewal: the operator stream ends when its token
// expires (streams.go), and the page must not break for it. Before the
// token runs out the page asks for a fresh one and swaps it in, so that
// the stream carries on past the old token's expiry; if the token does
// expire, the page keeps the dashboard (stale, and saying so) and resumes
// as soon as a fresh token is pasted, without going back to the login.
func TestOperatorPageTokenRenewal(t *testing.T) {
	if testing.Short() {
		t.Skip("drives a browser: not in -short mode")
	}
	chromium := findChromium(t)
	e := newOrderEnv(t, withOpsFeed(t), withAdminOps)
	e.createSKU(t, newSKU("Flash sneaker", 12900, 30))
	mint := func(ttl time.Duration) (string, time.Time) {
		t.Helper()
		tok, err := auth.Mint(e.Secret, "ops", true, ttl)
		if err != nil {
			t.Fatal(err)
		}
		exp, ok := bearerExpiry(tok)
		if !ok {
			t.Fatal("no exp")
		}
		return tok, exp
	}
	br := openBrowser(t, chromium)
	if err := chromedp.Do(br.ctx, chromedp.Navigate(e.URL+"/admin/")); err != nil {
		t.Fatalf("open the page in chromium %s: %v", chromium, err)
	}
	live := textOf("#status") + ` === "live"`
	dashboardShown := `!document.getElementById("dashboard").hidden && document.getElementById("login").hidden`
	renewShown := `document.getElementById("renew") !== null && !document.getElementById("renew").hidden`

	// A token about to expire: the page asks for a fresh one while live,
	// and the fresh one carries the stream past the old one's expiry.
	short, exp := mint(15 * time.Second)
	br.step("log in with a short token", 2*time.Minute,
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), short),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("dashboard")),
	)
	br.until("live", live)
	br.until("the page asks for a fresh token before this one expires", renewShown+` && `+textOf("#renew")+`.includes("expires")`)
	fresh, _ := mint(time.Hour)
	br.step("paste a fresh token", 2*time.Minute,
		chromedp.SendKeys(chromedp.ID("renew-token"), fresh),
		chromedp.Click(chromedp.ID("renew-button")),
	)
	br.until("live with the fresh token, nothing asked", live+` && document.getElementById("renew").hidden && `+
		`sessionStorage.getItem("orderd.adminToken") === `+fmt.Sprintf("%q", fresh))
	for time.Now().Before(exp.Add(2 * time.Second)) {
		time.Sleep(200 * time.Millisecond)
	}
	updated, err := chromedp.Run(br.ctx, chromedp.Evaluate[string](textOf("#updated")))
	if err != nil {
		t.Fatal(err)
	}
	br.until("still live after the old token expired, numbers moving", live+` && `+dashboardShown+` && `+textOf("#updated")+` !== `+fmt.Sprintf("%q", updated))

	// A token left to expire: the stream ends, the page keeps the
	// dashboard and says why, and a fresh token resumes it.
	br.step("log out", time.Minute, chromedp.Click(chromedp.ID("logout")), chromedp.WaitVisible(chromedp.ID("token")))
	short, _ = mint(6 * time.Second)
	br.step("log in with another short token", 2*time.Minute,
		chromedp.SendKeys(chromedp.ID("token"), short),
		chromedp.Click(chromedp.ID("login-button")),
		chromedp.WaitVisible(chromedp.ID("dashboard")),
	)
	br.until("live", live)
	br.until("the token expired: the dashboard stays, the page says so and asks for a fresh token",
		textOf("#status")+` === "token expired" && `+dashboardShown+` && `+renewShown+` && `+textOf("#renew")+`.includes("expired")`)
	fresh, _ = mint(time.Hour)
	br.step("paste a fresh token", 2*time.Minute,
		chromedp.SendKeys(chromedp.ID("renew-token"), fresh),
		chromedp.Click(chromedp.ID("renew-button")),
	)
	br.until("live again", live+` && `+dashboardShown+` && document.getElementById("renew").hidden`)
}

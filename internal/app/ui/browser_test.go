package ui_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/usernameregistry/registry/events"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
	"github.com/usernameregistry/registry/internal/app/ui"
	"github.com/usernameregistry/registry/internal/testenv"
)

const chromiumPath = "/usr/bin/chromium" // Debian's package

// TestPageShowsRejection runs a real registry, opens the API node's /ui in
// headless Chromium, has a claim rejected as taken, and waits for the page
// to list and chart it, as a newcomer would see it in registry dev. The
// screenshot it takes is written under the test's temp dir and, when
// UI_SCREENSHOT is set, to that path.
func TestPageShowsRejection(t *testing.T) {
	requireChromium(t)
	reg := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1})
	node := reg.APIs[0]
	ctx := browser(t)

	step(t, ctx, "open the page", chromedp.Navigate(node.OpsURL+"/ui"))
	waitFor(t, ctx, "the page to load its history and connect", `document.body.dataset.state === 'live'`, 10*time.Second)

	claim(t, node.URL, "rejectme", "7d3f2b0e-5a61-4c1e-9f5b-2b8c1d4e6a01", http.StatusCreated)
	claim(t, node.URL, "rejectme", "c4a8e913-2f7d-4b6a-8e15-93d0f2a7b502", http.StatusConflict)

	waitFor(t, ctx, "the page to list and chart the rejection", `(() => {
		const row = document.querySelector('#latest tbody tr');
		return !!row && row.cells[2].textContent === 'rejectme' &&
			row.querySelector('.badge').textContent === 'taken' &&
			window.rejectionsUI.total('taken') > 0 &&
			document.getElementById('total-taken').textContent === '1';
	})()`, 10*time.Second)
	screenshot(t, ctx)
}

// TestPageReconnects closes the UI under an open page, as a node does when
// it stops, and serves a new one, as the restarted node would: the page
// must say it is offline, reconnect, and show the new node's rejections.
func TestPageReconnects(t *testing.T) {
	requireChromium(t)
	stats := func(context.Context) (ui.Stats, error) { return ui.Stats{}, nil }
	var current atomic.Pointer[ui.UI]
	start := func() *ui.UI {
		u, err := ui.New(ui.Config{Stats: stats, Logger: testenv.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(u.Close)
		current.Store(u)
		return u
	}
	start()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		current.Load().Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	ctx := browser(t)
	step(t, ctx, "open the page", chromedp.Navigate(srv.URL+"/ui"))
	waitFor(t, ctx, "the page to connect", `document.body.dataset.state === 'live'`, 10*time.Second)

	current.Load().Close()
	waitFor(t, ctx, "the page to notice the stop", `document.body.dataset.state !== 'live'`, 10*time.Second)
	u := start()
	waitFor(t, ctx, "the page to reconnect", `document.body.dataset.state === 'live'`, 15*time.Second)
	u.Observe(&events.Decision{RequestID: "r1", Username: "Admin", Canonical: "admin", Outcome: events.OutcomeRejected, Reason: events.ReasonReserved}, time.Now())
	waitFor(t, ctx, "the new node's rejection", `window.rejectionsUI.total('reserved') === 1 &&
		document.querySelector('#latest tbody tr').cells[2].textContent === 'Admin'`, 10*time.Second)
}

func requireChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and Chromium is missing at %s (apt-get install chromium): %v", chromiumPath, err)
		}
		t.Skipf("Chromium is missing at %s; install it with apt-get install chromium: %v", chromiumPath, err)
	}
}

// browser starts headless Chromium that loads nothing but what the test
// serves, and returns a context for its tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-quic", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc()
	})
	// Start the browser on a context without a timeout: a timeout on the
	// first action would stop the whole browser when it ends.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", chromiumPath, err)
	}
	return ctx
}

func step(t *testing.T, ctx context.Context, what string, a chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, a); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// waitFor polls expr in the page until it is true; on a timeout it fails
// with what the page shows.
func waitFor(t *testing.T, ctx context.Context, what, expr string, timeout time.Duration) {
	t.Helper()
	pctx, cancel := context.WithTimeout(ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(pctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(100*time.Millisecond)))
	if err != nil {
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.dataset.state + '\n' + document.body.innerText`))
		screenshot(t, ctx)
		t.Fatalf("waiting for %s: %v\npage:\n%s", what, err, text)
	}
}

func claim(t *testing.T, apiURL, username, userID string, want int) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"username": username, "user_id": userID})
	res, err := http.Post(apiURL+"/v1/claims?wait=10s", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got map[string]any
	json.NewDecoder(res.Body).Decode(&got) //nolint:errcheck // shown on failure
	if res.StatusCode != want {
		t.Fatalf("claiming %q for %s: %d %v, want %d", username, userID, res.StatusCode, got, want)
	}
}

func screenshot(t *testing.T, ctx context.Context) {
	t.Helper()
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(sctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Errorf("screenshot: %v", err)
		return
	}
	paths := []string{filepath.Join(t.TempDir(), "ui.png")}
	if p := os.Getenv("UI_SCREENSHOT"); p != "" {
		paths = append(paths, p)
	}
	for _, p := range paths {
		if err := os.WriteFile(p, png, 0o644); err != nil {
			t.Errorf("writing screenshot: %v", err)
			continue
		}
		t.Logf("screenshot: %s", p)
	}
}

package claims

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestClaimErrorCallerLeftIsNotAnError: a write abandoned because its
// caller went away is logged at INFO, not as the broker outage an ERROR
// line would page someone for; a write that timed out is still an ERROR.
// Both answer 503 unavailable with Retry-After.
func TestClaimErrorCallerLeftIsNotAnError(t *testing.T) {
	for _, c := range []struct {
		name, level string
		err         error
	}{
		{"caller left", "level=INFO", fmt.Errorf("%w: not acknowledged in time: %w", ErrUnavailable, context.Canceled)},
		{"write bound", "level=ERROR", fmt.Errorf("%w: not acknowledged in time: %w", ErrUnavailable, context.DeadlineExceeded)},
	} {
		var logs bytes.Buffer
		a := &api{cfg: HandlerConfig{}.WithDefaults(), log: slog.New(slog.NewTextHandler(&logs, nil))}
		w := httptest.NewRecorder()
		a.claimError(w, c.err)
		if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), `"unavailable"`) {
			t.Errorf("%s: answered %d %q (Retry-After %q); want 503 unavailable with Retry-After", c.name, w.Code, w.Body.String(), w.Header().Get("Retry-After"))
		}
		if !strings.Contains(logs.String(), c.level) {
			t.Errorf("%s: logged %q; want %s", c.name, logs.String(), c.level)
		}
	}
}

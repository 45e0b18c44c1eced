package bench

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"
)

// TestRefusedTokenIsAnError: a 401 or 403 says nothing about the claim, so
// the run must count it as an error, not as an answer (a bench without its
// token once reported thousands of 401s and "errors: none").
func TestRefusedTokenIsAnError(t *testing.T) {
	t.Parallel()
	for _, code := range []int{http.StatusUnauthorized, http.StatusForbidden} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_, _ = w.Write([]byte(`{"status":"error","reason":"unauthorized"}`))
		}))
		s := &sender{client: srv.Client(), url: srv.URL + "/v1/claims"}
		_, kind, err := s.send(context.Background(), claim{RequestID: uuid.New(), UserID: uuid.New(), Username: "alice"})
		srv.Close()
		if kind != errAuth || err == nil {
			t.Errorf("answer %d: error type %q, %v; want %q", code, kind, err, errAuth)
		}
	}
}

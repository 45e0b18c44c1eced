package stack_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/usernameregistry/registry/claims"
	"github.com/usernameregistry/registry/internal/app/stack/stacktest"
)

// noRedirects reports a redirect instead of following it.
var noRedirects = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

// lookup GETs /v1/usernames/{rawPath} as written (not cleaned, not
// escaped further) and decodes the availability answer.
func lookup(t *testing.T, api *stacktest.APINode, rawPath string) (int, claims.Availability) {
	t.Helper()
	u, err := url.Parse(api.URL)
	if err != nil {
		t.Fatal(err)
	}
	req := &http.Request{Method: http.MethodGet, URL: &url.URL{Scheme: u.Scheme, Host: u.Host, Opaque: "/v1/usernames/" + rawPath}, Host: u.Host,
		Header: http.Header{}}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", rawPath, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var av claims.Availability
	if err := json.Unmarshal(raw, &av); err != nil {
		t.Fatalf("GET %s: %d %q is not an availability answer", rawPath, resp.StatusCode, raw)
	}
	return resp.StatusCode, av
}

// TestPolicyV2Table runs every row of issue 11's table through the HTTP
// API of a new registry (policy version 2), with the answer the row must
// get, and more of each kind.
func TestPolicyV2Table(t *testing.T) {
	t.Parallel()
	r := stacktest.Start(t, stacktest.Options{Projectors: 1, APIs: 1})
	api := r.APIs[0]
	a, b := newID(), newID()
	claim := func(what, user, name string, code int, status, reason, conflictsWith string) reply {
		t.Helper()
		got := post(t, api, newID(), user, name)
		want(t, what, got, code, status, reason, conflictsWith)
		return got
	}

	// The displayed form looks like another name.
	claim("lumen11", a, "lumen11", 201, "registered", "", "")
	if got := claim("Iumen11 (capital I)", b, "Iumen11", 422, "rejected", "invalid", ""); !strings.Contains(got.Detail, "iumen11") {
		t.Errorf("Iumen11: detail %q does not offer the lowercase spelling", got.Detail)
	}
	// A soft-dotted letter with U+0307.
	claim("pilot7", a, "pilot7", 201, "registered", "", "")
	claim("P\u0130LOT7", b, "P\u0130LOT7", 422, "rejected", "invalid", "")
	// Repeated marks.
	claim("zo\u00e9", a, "zo\u00e9", 201, "registered", "", "")
	claim("zoe\u0301\u0301", b, "zoe\u0301\u0301", 422, "rejected", "invalid", "")
	// A digit whose prototype is a capital letter.
	claim("dog", a, "dog", 201, "registered", "", "")
	claim("d0g", b, "d0g", 409, "rejected", "confusable", "dog")
	// Mixed-script squatting: the squatter is refused, the genuine name wins.
	claim("\u0430cmecorp", b, "\u0430cmecorp", 422, "rejected", "invalid", "")
	claim("acmecorp", a, "acmecorp", 201, "registered", "", "")
	// Canonically equivalent input gets the same answer.
	composed, decomposed := strings.Repeat("\uac01", 29), strings.Repeat("\u1100\u1161\u11a8", 29)
	claim("29 × U+AC01", a, composed, 201, "registered", "", "")
	claim("the same name decomposed, by its holder", a, decomposed, 200, "registered", "", "")
	claim("the same name decomposed, by another user", b, decomposed, 409, "rejected", "taken", composed)
	// Names that break paths.
	for _, name := range []string{"..", ".well-known", "a/b", "a\\b", "."} {
		claim(name, b, name, 422, "rejected", "invalid", "")
	}
	claim("robots.txt", b, "robots.txt", 409, "rejected", "reserved", "")
	claim("favicon.ico", b, "favicon.ico", 409, "rejected", "reserved", "")
	// The Bidi rule only for right-to-left names.
	claim("jos\u00e9_", a, "jos\u00e9_", 201, "registered", "", "")
	// The lookup agrees with a claim.
	claim("orchid5", a, "orchid5", 201, "registered", "", "")
	claim("orch\u0456d5", b, "orch\u0456d5", 422, "rejected", "invalid", "")

	for _, c := range []struct {
		path                  string
		code                  int
		status, conflictsWith string
	}{
		{"orch%D1%96d5", 422, claims.StatusInvalid, "orchid5"},           // Cyrillic і: refused, and looks like orchid5
		{"0rchid5", 409, claims.StatusConfusable, "orchid5"},             // what a claim would get
		{"orchid5", 200, claims.StatusHeld, "orchid5"},                   // the holder, as before
		{"Orchid5", 200, claims.StatusHeld, "orchid5"},                   // the same canonical name
		{"orchid6", 404, claims.StatusAvailable, ""},                     // free
		{"robots.txt", 409, claims.StatusReserved, ""},                   // reserved
		{"..", 422, claims.StatusInvalid, ""},                            // never redirected
		{".", 422, claims.StatusInvalid, ""},                             // never redirected
		{"%2e%2e", 422, claims.StatusInvalid, ""},                        // encoded dots
		{"a/b", 422, claims.StatusInvalid, ""},                           // a slash in the path
		{"a%2Fb", 422, claims.StatusInvalid, ""},                         // an encoded slash
		{"a//b", 422, claims.StatusInvalid, ""},                          // ServeMux would clean this
		{".well-known", 422, claims.StatusInvalid, ""},                   // a web path
		{"Iumen11", 422, claims.StatusInvalid, "lumen11"},                // looks like a held name as typed
		{"d0g", 409, claims.StatusConfusable, "dog"},                     // the digit row
		{"%E1%84%80%E1%85%A1%E1%86%A8", 404, claims.StatusAvailable, ""}, // one decomposed syllable, free
	} {
		code, av := lookup(t, api, c.path)
		if code != c.code || av.Status != c.status || av.ConflictsWith != c.conflictsWith {
			t.Errorf("GET /v1/usernames/%s: %d %+v; want %d %s conflicts_with %q", c.path, code, av, c.code, c.status, c.conflictsWith)
		}
		if av.Available != (c.status == claims.StatusAvailable) || av.PolicyVersion != 2 {
			t.Errorf("GET /v1/usernames/%s: available %v, policy version %d", c.path, av.Available, av.PolicyVersion)
		}
		if c.status != claims.StatusInvalid && (av.Canonical == "" || av.Key == "" || av.Partition == nil) {
			t.Errorf("GET /v1/usernames/%s: canonical %q, key %q, partition %v; want all three", c.path, av.Canonical, av.Key, av.Partition)
		}
	}
	if code, av := lookup(t, api, "0rchid5"); av.Key != "orchid5" || code != 409 {
		t.Errorf("0rchid5: key %q; want orchid5, the key a producer must write", av.Key)
	}
	waitSettled(t, r)
	checkAgreement(t, r)
}

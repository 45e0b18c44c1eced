package projection

import (
	"encoding/json"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/usernameregistry/registry/claims/username"
	"github.com/usernameregistry/registry/events"
)

// v1Record is one claim of testdata/v1-log.json and the decision the
// version-1 code published for it. The file was written by that code
// before version 2 existed (commit b6256ff): 46 claims in one partition,
// among them every kind of name that version 2 decides differently.
type v1Record struct {
	Key, Value string
	Offset     int64
	Timestamp  time.Time
	Decision   string
}

func readV1Log(t *testing.T) []*kgo.Record {
	t.Helper()
	b, err := os.ReadFile("testdata/v1-log.json")
	if err != nil {
		t.Fatal(err)
	}
	var log []v1Record
	if err := json.Unmarshal(b, &log); err != nil {
		t.Fatal(err)
	}
	recs := make([]*kgo.Record, len(log))
	for i, l := range log {
		recs[i] = &kgo.Record{Topic: events.TopicClaims, Key: []byte(l.Key), Value: []byte(l.Value), Offset: l.Offset,
			Timestamp: l.Timestamp, Headers: []kgo.RecordHeader{
				{Key: events.HeaderType, Value: []byte(events.TypeClaimSubmitted)},
				{Key: events.HeaderSchema, Value: []byte(strconv.Itoa(events.SchemaVersion))},
			}}
	}
	return recs
}

// TestReplayV1Log replays a log decided under policy version 1 with the
// frozen version 1 and gets every decision back byte for byte.
func TestReplayV1Log(t *testing.T) {
	b, err := os.ReadFile("testdata/v1-log.json")
	if err != nil {
		t.Fatal(err)
	}
	var log []v1Record
	if err := json.Unmarshal(b, &log); err != nil {
		t.Fatal(err)
	}
	recs := readV1Log(t)
	rd := NewPolicyRedecider(1, username.MustVersion(1), false)
	for i, rec := range recs {
		res, err := rd.Redecide(rec)
		if err != nil {
			t.Fatal(err)
		}
		if string(res.Value) != log[i].Decision {
			t.Errorf("claims 0/%d: version 1 now decides\n%s\nwhere it decided\n%s", rec.Offset, res.Value, log[i].Decision)
		}
	}
}

// TestV2RefusesV1Claims: a registry deciding under version 2 does not
// decide claims made under version 1 by the new rules, and the what-if
// replay (translate) does, showing the rows of issue 11 change.
func TestV2RefusesV1Claims(t *testing.T) {
	recs := readV1Log(t)
	v2 := username.MustVersion(2)
	strict, whatIf := NewPolicyRedecider(1, v2, false), NewPolicyRedecider(1, v2, true)
	changed := map[string]string{}
	for _, rec := range recs {
		res, err := strict.Redecide(rec)
		if err != nil {
			t.Fatal(err)
		}
		// Invalid either way: by version 2's rules, or else for being made
		// under version 1.
		if res.Decision.Reason != events.ReasonInvalid {
			t.Fatalf("claims 0/%d under version 2: %s; want invalid", rec.Offset, res.Value)
		}
		if _, err := username.MustVersion(2).Normalize(res.Decision.Username); err == nil && !strings.Contains(res.Decision.Detail, "policy version 1") {
			t.Fatalf("claims 0/%d under version 2: %s; want invalid for its version", rec.Offset, res.Value)
		}
		res, err = whatIf.Redecide(rec)
		if err != nil {
			t.Fatal(err)
		}
		if res.PolicyVersion != 1 || res.Decision.PolicyVersion != 2 {
			t.Fatalf("what-if: claim version %d, decision version %d", res.PolicyVersion, res.Decision.PolicyVersion)
		}
		changed[res.Decision.Username] = res.Decision.Outcome + "/" + res.Decision.Reason
	}
	for name, want := range map[string]string{
		"Iumen11": "rejected/invalid", "P\u0130LOT7": "rejected/invalid", "d0g": "rejected/confusable",
		"\u0430cmecorp": "rejected/invalid", "acmecorp": "registered/", "..": "rejected/invalid",
		"robots.txt": "rejected/reserved", "jos\u00e9_": "registered/", "lumen11": "registered/",
	} {
		if changed[name] != want {
			t.Errorf("what-if under version 2: %+q is %s; want %s", name, changed[name], want)
		}
	}
}

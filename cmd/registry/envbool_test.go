package main

import "testing"

// TestEnvBool: every spelling strconv.ParseBool knows counts, and any other
// value is an error, never a silent false.
func TestEnvBool(t *testing.T) {
	for _, c := range []struct {
		value   string
		want    bool
		wantErr bool
	}{
		{"", false, false},
		{"true", true, false},
		{"1", true, false},
		{"TRUE", true, false},
		{"false", false, false},
		{"0", false, false},
		{"yes", false, true},
		{"on", false, true},
	} {
		t.Setenv("REGISTRY_TEST_BOOL", c.value)
		var errs []error
		got := envBool("REGISTRY_TEST_BOOL", &errs)
		if got != c.want || (len(errs) > 0) != c.wantErr {
			t.Errorf("REGISTRY_TEST_BOOL=%q: got %v, errors %v; want %v, error %v", c.value, got, errs, c.want, c.wantErr)
		}
	}
}

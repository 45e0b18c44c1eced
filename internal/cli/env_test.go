package cli

import (
	"flag"
	"strings"
	"testing"
	"time"
)

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
		var env Env
		got := env.Bool("REGISTRY_TEST_BOOL")
		if got != c.want || (len(env.Errs) > 0) != c.wantErr {
			t.Errorf("REGISTRY_TEST_BOOL=%q: got %v, errors %v; want %v, error %v", c.value, got, env.Errs, c.want, c.wantErr)
		}
	}
}

// TestEnvMalformedNumbers: a variable that does not parse is an error
// that Parse reports before any flag, never the default in silence.
func TestEnvMalformedNumbers(t *testing.T) {
	t.Setenv("REGISTRY_PARTITIONS", "twelve")
	t.Setenv("REGISTRY_TEST_DURATION", "5")
	var c Common
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	c.Declare(fs, "serve", "partitions")
	if d := c.Duration("REGISTRY_TEST_DURATION", time.Second); d != time.Second {
		t.Errorf("malformed duration gave %v, want the default 1s", d)
	}
	err := c.Parse(fs, nil)
	if err == nil || !strings.Contains(err.Error(), `REGISTRY_PARTITIONS="twelve" is not a whole number`) ||
		!strings.Contains(err.Error(), `REGISTRY_TEST_DURATION="5" is not a duration`) {
		t.Fatalf("Parse: %v; want both malformed variables named", err)
	}
}

// TestCommonTLSVariableRefusesYes: both commands read REGISTRY_KAFKA_TLS
// through Common, so "yes" is refused in registry-bench as in registry
// (bench once read anything but "true" as false).
func TestCommonTLSVariableRefusesYes(t *testing.T) {
	t.Setenv("REGISTRY_KAFKA_TLS", "yes")
	var c Common
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	if !c.Declare(fs, "generate", "brokers") {
		t.Fatal("brokers is a common flag")
	}
	if err := c.Parse(fs, nil); err == nil || !strings.Contains(err.Error(), "REGISTRY_KAFKA_TLS") {
		t.Fatalf("Parse: %v; want REGISTRY_KAFKA_TLS refused", err)
	}
	t.Setenv("REGISTRY_KAFKA_TLS", "1")
	c = Common{}
	fs = flag.NewFlagSet("test", flag.ContinueOnError)
	c.Declare(fs, "generate", "brokers")
	if err := c.Parse(fs, nil); err != nil || !c.Security.TLS {
		t.Fatalf("REGISTRY_KAFKA_TLS=1: err %v, TLS %v; want TLS on", err, c.Security.TLS)
	}
}

package main

import (
	"os"
	"testing"

	"github.com/usernameregistry/registry/internal/testenv"
)

// runAsRegistry makes the test binary act as the registry binary, for
// tests that start it as a child process.
const runAsRegistry = "REGISTRY_TEST_RUN_MAIN"

// TestMain runs main when the test binary is started as the registry, and
// otherwise the tests, failing the package when one leaves a goroutine
// running (testenv.Main runs goleak after the tests).
func TestMain(m *testing.M) {
	if os.Getenv(runAsRegistry) == "1" {
		main()
		os.Exit(0)
	}
	testenv.Main(m)
}

package kafka

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves a goroutine running. (It
// cannot use testenv.Main, which imports this package.)
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

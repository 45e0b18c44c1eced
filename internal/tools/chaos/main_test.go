package chaos

import (
	"testing"

	"github.com/usernameregistry/registry/internal/testenv"
)

// TestMain fails the package when a test leaves a goroutine running
// (testenv.Main runs goleak after the tests).
func TestMain(m *testing.M) { testenv.Main(m) }

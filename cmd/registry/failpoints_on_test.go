//go:build failpoints

package main

import (
	"errors"
	"testing"

	"github.com/usernameregistry/registry/projector"
)

// TestFailpointsInTheChaosBuild: the failpoints build (the chaos
// harness's) reads REGISTRY_FAILPOINTS.
func TestFailpointsInTheChaosBuild(t *testing.T) {
	t.Setenv("REGISTRY_FAILPOINTS", projector.FailAfterCommit+":error")
	hook, err := failpointHook()
	if err != nil || hook == nil {
		t.Fatalf("failpointHook() = %v, %v", hook != nil, err)
	}
	if err := hook(projector.FailAfterCommit); !errors.Is(err, projector.ErrFailpoint) {
		t.Errorf("first hit: %v, want ErrFailpoint", err)
	}
	t.Setenv("REGISTRY_FAILPOINTS", "after-commit:explode")
	if _, err := failpointHook(); err == nil {
		t.Error("an unknown action was accepted")
	}
}

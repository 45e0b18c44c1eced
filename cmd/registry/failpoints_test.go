//go:build !failpoints

package main

import "testing"

// TestFailpointsAreOffInTheProduct: the registry as built for use ignores
// REGISTRY_FAILPOINTS, even one that would crash the projector.
func TestFailpointsAreOffInTheProduct(t *testing.T) {
	t.Setenv("REGISTRY_FAILPOINTS", "before-commit:crash")
	hook, err := failpointHook()
	if hook != nil || err != nil {
		t.Fatalf("failpointHook() = %v, %v; want no hook", hook != nil, err)
	}
}

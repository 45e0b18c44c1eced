//go:build !failpoints

package main

// failpointHook gives the projector of `registry project` no failpoints:
// in the registry as built for use, REGISTRY_FAILPOINTS means nothing
// (TestFailpointsAreOffInTheProduct). The chaos harness builds the binary
// with -tags failpoints (failpoints_on.go).
func failpointHook() (func(string) error, error) { return nil, nil }

// failpointHookOf gives registry policy upgrade no failpoints either.
func failpointHookOf([]string) (func(string) error, error) { return nil, nil }

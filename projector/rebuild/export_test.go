package rebuild

// Read is read, for the external tests (package rebuild_test), which
// cannot be internal ones: they use the claims generator
// (internal/tools/loadgen), which imports this package.
var Read = read

package claims

// ReadyError is a HandlerConfig.Ready failure: Detail says which part is
// not ready in words safe to show a caller (no hosts, users or ports);
// Err, which may hold them, goes to the log only.
type ReadyError struct {
	Detail string
	Err    error
}

func (e *ReadyError) Error() string { return e.Detail + ": " + e.Err.Error() }
func (e *ReadyError) Unwrap() error { return e.Err }

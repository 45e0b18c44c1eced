package claims

import "context"

type callerKey struct{}

// WithCaller returns ctx carrying the name of the authenticated service
// making the request; the API records it on every claim it writes.
func WithCaller(ctx context.Context, name string) context.Context {
	return context.WithValue(ctx, callerKey{}, name)
}

// CallerFrom is the caller name WithCaller put in ctx, or "".
func CallerFrom(ctx context.Context) string {
	s, _ := ctx.Value(callerKey{}).(string)
	return s
}

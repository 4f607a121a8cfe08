package coordinator

// testHooks widen race windows that tests must hit every time, not by
// luck. Every field is nil in production; the tests of this package set
// them (export_test.go) before any coordinator starts and clear them after
// every one has stopped, so no goroutine reads them while they change.
var testHooks struct {
	// drainCheck runs where Drain looks whether the member is drained.
	drainCheck func()
	// revokeReason runs while the worker decides why an actor of sync
	// must stop (worker.mu is held).
	revokeReason func(sync string)
	// actorStart runs first thing on the goroutine of a sync's actor.
	actorStart func(sync string)
	// giveBack runs before an actor deletes an owner key it holds but no
	// longer wants.
	giveBack func(sync string)
	// beforeAssign runs after a claim succeeded, before the sync is handed
	// to the handler; lost is the session's Lost channel.
	beforeAssign func(sync string, lost <-chan struct{})
}

func hook(f func()) {
	if f != nil {
		f()
	}
}

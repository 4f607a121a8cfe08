package coordinator

import "testing"

// TestHooks are the race-window hooks of testHooks, for the tests of
// package coordinator_test.
type TestHooks struct {
	DrainCheck   func()
	RevokeReason func(sync string)
	ActorStart   func(sync string)
	GiveBack     func(sync string)
	BeforeAssign func(sync string, lost <-chan struct{})
}

// SetTestHooks installs h until t ends. Call it before the test starts any
// coordinator (before newWorld), so that the hooks are cleared only after
// every coordinator has stopped.
func SetTestHooks(t testing.TB, h TestHooks) {
	testHooks.drainCheck = h.DrainCheck
	testHooks.revokeReason = h.RevokeReason
	testHooks.actorStart = h.ActorStart
	testHooks.giveBack = h.GiveBack
	testHooks.beforeAssign = h.BeforeAssign
	t.Cleanup(func() {
		testHooks.drainCheck, testHooks.revokeReason, testHooks.actorStart = nil, nil, nil
		testHooks.giveBack, testHooks.beforeAssign = nil, nil
	})
}

package coordinator_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestLeaveReturnsWhileReleasesHang: Leave must return within its ctx even
// when every release Txn of the member hangs (etcd never answers). Found by
// the simulator (internal/sim, seeds 5 and 14): leaveGracefully waited for
// the actors, which retried their give-backs for as long as the session
// lived, so Leave waited past its ctx for good.
func TestLeaveReturnsWhileReleasesHang(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := newSimMember(t, 3)
		// From now on every Txn hangs until its ctx ends; keep-alives pass.
		var on atomic.Bool
		on.Store(true)
		sm.hold("Txn", &on)
		lctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		start := time.Now()
		left := make(chan error, 1)
		go func() { left <- sm.co.Leave(lctx) }()
		select {
		case err := <-left:
			t.Logf("Leave returned after %v: %v", time.Since(start), err)
		case <-time.After(time.Minute):
			t.Fatal("Leave(3s ctx) had not returned a minute later while every release hung")
		}
		if d := time.Since(start); d > 3*time.Second+2*time.Second {
			t.Errorf("Leave took %v with a 3s ctx", d)
		}
		if n := sm.owned.Load(); n != 0 {
			t.Errorf("%d syncs still owned after Leave", n)
		}
		<-sm.co.Done()
	})
}

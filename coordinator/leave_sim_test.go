package coordinator_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/baton-go/baton/internal/simetcd"
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

// TestLeaveWhileRejoiningReturnsWithinItsCtx: a Leave that arrives while
// the member is registering again after a lost session must return within
// its ctx, even when etcd answers no request but lease grants. Found by
// the simulator (internal/sim, a soak seed): the rejoin gave its new lease
// back with a fresh TTL-long ctx, and Leave waited for that revoke.
func TestLeaveWhileRejoiningReturnsWithinItsCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := newSimMember(t, 1)
		var on atomic.Bool
		on.Store(true)
		sm.conn.SetInjector(func(method string) simetcd.Fault {
			if on.Load() && method != "LeaseGrant" {
				return simetcd.Fault{Kind: simetcd.Hang}
			}
			return simetcd.Fault{}
		})
		// The session is lost within a TTL; the rejoin gets its lease and
		// then waits on the member-key Txn or the give-back of the lease.
		sm.waitOwned(t, 0, time.Minute, "once renewals got no answer")
		for _, wait := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond} {
			time.Sleep(wait)
			if sm.co.Err() != nil {
				t.Fatalf("member stopped: %v", sm.co.Err())
			}
		}
		lctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		if err := sm.co.Leave(lctx); err != nil {
			t.Logf("Leave: %v", err)
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Errorf("Leave(200ms ctx) during a rejoin took %v", d)
		}
		on.Store(false)
	})
}

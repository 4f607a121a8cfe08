package coordinator_test

import (
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
)

// TestLeaderRequestWithoutAnswerIsRetried: a leader whose Txns get no
// answer for a while (held by the connection until their ctx ends) must
// go on once they pass again. Found by the simulator (internal/sim, seed
// 23): writeTargets and the view's load had no deadline, so one held Txn
// wedged the leader for good: no sync placed, no failover planned.
func TestLeaderRequestWithoutAnswerIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := newSimMember(t, 0)
		if !etcdtest.WaitUntil(time.Minute, sm.co.IsLeader) {
			t.Fatal("the only member does not lead a minute after it joined")
		}
		// For 3s every Txn is held until its ctx ends; syncs arrive meanwhile.
		var on atomic.Bool
		on.Store(true)
		sm.hold("Txn", &on)
		store := coordinator.NewSyncStore(sm.admin, "g")
		for i := range 3 {
			sm.putSync(t, store, i)
		}
		time.Sleep(3 * time.Second)
		on.Store(false)
		sm.waitOwned(t, 3, time.Minute, "after the held Txns passed again")
		sm.leave(t)
	})
}

// TestRejoinRequestWithoutAnswerIsRetried: after a lost session, a member
// whose rejoin requests (the lease grant, the member key) get no answer for
// a while must join again once they pass. Found by reading the code after
// the simulator found the same class in the leader: the rejoin ran on the
// client's context, with no deadline.
func TestRejoinRequestWithoutAnswerIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sm := newSimMember(t, 1)
		// For 5s nothing gets an answer: the session is lost, and the
		// rejoin's first requests are held.
		var on atomic.Bool
		on.Store(true)
		sm.hold("", &on)
		time.Sleep(5 * time.Second)
		on.Store(false)
		sm.waitOwned(t, 1, time.Minute, "after the requests passed again")
		if !etcdtest.WaitUntil(time.Minute, sm.co.IsLeader) {
			t.Fatal("not leader again a minute after the requests passed again")
		}
		sm.leave(t)
	})
}

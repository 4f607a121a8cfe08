package coordinator_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/simetcd"
)

// TestLeaderRequestWithoutAnswerIsRetried: a leader whose Txns get no
// answer for a while (held by the connection until their ctx ends) must
// go on once they pass again. Found by the simulator (internal/sim, seed
// 23): writeTargets and the view's load had no deadline, so one held Txn
// wedged the leader for good: no sync placed, no failover planned.
func TestLeaderRequestWithoutAnswerIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := simetcd.New(simetcd.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		admin := srv.Connect().Client()
		defer admin.Close()
		ctx := context.Background()
		store := coordinator.NewSyncStore(admin, "g")
		conn := srv.Connect()
		cli := conn.Client()
		defer cli.Close()
		var owned atomic.Int32
		co, err := coordinator.New(cli, "g", coordinator.HandlerFuncs{
			Assign: func(context.Context, *assignment.Claim) error { owned.Add(1); return nil },
			Revoke: func(context.Context, *assignment.Claim, assignment.RevokeReason) { owned.Add(-1) },
		}, coordinator.WithMemberID("m"), coordinator.WithTTL(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := co.Join(ctx); err != nil {
			t.Fatal(err)
		}
		for !co.IsLeader() {
			time.Sleep(10 * time.Millisecond)
		}
		// For 3s every Txn is held until its ctx ends; syncs arrive meanwhile.
		var hold atomic.Bool
		hold.Store(true)
		conn.SetInjector(func(method string) simetcd.Fault {
			if method == "Txn" && hold.Load() {
				return simetcd.Fault{Kind: simetcd.Hang}
			}
			return simetcd.Fault{}
		})
		for i := range 3 {
			if err := store.Put(ctx, assignment.Sync{ID: fmt.Sprintf("s%d", i), Spec: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(3 * time.Second)
		hold.Store(false)
		deadline := time.Now().Add(time.Minute)
		for owned.Load() != 3 {
			if time.Now().After(deadline) {
				t.Fatalf("%d of 3 syncs owned a minute after the held Txns passed again", owned.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := co.Leave(lctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRejoinRequestWithoutAnswerIsRetried: after a lost session, a member
// whose rejoin requests (the lease grant, the member key) get no answer for
// a while must join again once they pass. Found by reading the code after
// the simulator found the same class in the leader: the rejoin ran on the
// client's context, with no deadline.
func TestRejoinRequestWithoutAnswerIsRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		srv, err := simetcd.New(simetcd.Config{Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		admin := srv.Connect().Client()
		defer admin.Close()
		ctx := context.Background()
		if err := coordinator.NewSyncStore(admin, "g").Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		conn := srv.Connect()
		cli := conn.Client()
		defer cli.Close()
		var owned atomic.Int32
		co, err := coordinator.New(cli, "g", coordinator.HandlerFuncs{
			Assign: func(context.Context, *assignment.Claim) error { owned.Add(1); return nil },
			Revoke: func(context.Context, *assignment.Claim, assignment.RevokeReason) { owned.Add(-1) },
		}, coordinator.WithMemberID("m"), coordinator.WithTTL(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := co.Join(ctx); err != nil {
			t.Fatal(err)
		}
		for owned.Load() != 1 {
			time.Sleep(10 * time.Millisecond)
		}
		// For 5s nothing gets an answer: the session is lost, and the
		// rejoin's first requests are held.
		var hold atomic.Bool
		hold.Store(true)
		conn.SetInjector(func(string) simetcd.Fault {
			if hold.Load() {
				return simetcd.Fault{Kind: simetcd.Hang}
			}
			return simetcd.Fault{}
		})
		time.Sleep(5 * time.Second)
		hold.Store(false)
		deadline := time.Now().Add(time.Minute)
		for owned.Load() != 1 || !co.IsLeader() {
			if time.Now().After(deadline) {
				t.Fatalf("a minute after the requests passed again: owned %d, leader %v", owned.Load(), co.IsLeader())
			}
			time.Sleep(10 * time.Millisecond)
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := co.Leave(lctx); err != nil {
			t.Fatal(err)
		}
	})
}

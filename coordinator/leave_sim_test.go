package coordinator_test

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/simetcd"
)

// TestLeaveReturnsWhileReleasesHang: Leave must return within its ctx even
// when every release Txn of the member hangs (etcd never answers). Found by
// the simulator (internal/sim, seeds 5 and 14): leaveGracefully waited for
// the actors, which retried their give-backs for as long as the session
// lived, so Leave waited past its ctx for good.
func TestLeaveReturnsWhileReleasesHang(t *testing.T) {
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
		for _, id := range []string{"a", "b", "c"} {
			if err := store.Put(ctx, assignment.Sync{ID: id, Spec: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
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
		for owned.Load() != 3 {
			time.Sleep(10 * time.Millisecond)
		}
		// From now on every Txn hangs until its ctx ends; keep-alives pass.
		conn.SetInjector(func(method string) simetcd.Fault {
			if method == "Txn" {
				return simetcd.Fault{Kind: simetcd.Hang}
			}
			return simetcd.Fault{}
		})
		lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		start := time.Now()
		left := make(chan error, 1)
		go func() { left <- co.Leave(lctx) }()
		select {
		case err := <-left:
			t.Logf("Leave returned after %v: %v", time.Since(start), err)
		case <-time.After(time.Minute):
			t.Fatal("Leave(3s ctx) had not returned a minute later while every release hung")
		}
		if d := time.Since(start); d > 3*time.Second+2*time.Second {
			t.Errorf("Leave took %v with a 3s ctx", d)
		}
		if owned.Load() != 0 {
			t.Errorf("%d syncs still owned after Leave", owned.Load())
		}
		<-co.Done()
	})
}

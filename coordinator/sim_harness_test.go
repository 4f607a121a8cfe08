package coordinator_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/coordinator"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/simetcd"
)

// simMember is one member "m" of group "g" on simetcd, for tests that run
// inside a synctest bubble: faults go on conn, admin is fault-free, owned
// counts the syncs the member runs.
type simMember struct {
	srv   *simetcd.Server
	admin *clientv3.Client
	conn  *simetcd.Conn
	co    *coordinator.Coordinator
	owned atomic.Int32
}

// newSimMember puts syncs s0..s<n-1>, starts the member with a 2s TTL and
// waits until it runs all of them. Everything is closed at the test's end.
func newSimMember(t *testing.T, n int) *simMember {
	t.Helper()
	srv, err := simetcd.New(simetcd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	sm := &simMember{srv: srv, admin: srv.Connect().Client(), conn: srv.Connect()}
	t.Cleanup(func() { _ = sm.admin.Close() })
	ctx := context.Background()
	store := coordinator.NewSyncStore(sm.admin, "g")
	for i := range n {
		sm.putSync(t, store, i)
	}
	cli := sm.conn.Client()
	t.Cleanup(func() { _ = cli.Close() })
	sm.co, err = coordinator.New(cli, "g", coordinator.HandlerFuncs{
		Assign: func(context.Context, *assignment.Claim) error { sm.owned.Add(1); return nil },
		Revoke: func(context.Context, *assignment.Claim, assignment.RevokeReason) { sm.owned.Add(-1) },
	}, coordinator.WithMemberID("m"), coordinator.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := sm.co.Join(ctx); err != nil {
		t.Fatal(err)
	}
	sm.waitOwned(t, int32(n), time.Minute, "after Join")
	return sm
}

func (sm *simMember) putSync(t *testing.T, store *coordinator.SyncStore, i int) {
	t.Helper()
	if err := store.Put(context.Background(), assignment.Sync{ID: fmt.Sprintf("s%d", i), Spec: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
}

// hold makes every request of method ("" for all) hang until its ctx ends
// while on is set.
func (sm *simMember) hold(method string, on *atomic.Bool) {
	sm.conn.SetInjector(func(m string) simetcd.Fault {
		if (method == "" || m == method) && on.Load() {
			return simetcd.Fault{Kind: simetcd.Hang}
		}
		return simetcd.Fault{}
	})
}

// waitOwned waits (in virtual time) until the member runs n syncs.
func (sm *simMember) waitOwned(t *testing.T, n int32, limit time.Duration, when string) {
	t.Helper()
	if !etcdtest.WaitUntil(limit, func() bool { return sm.owned.Load() == n }) {
		t.Fatalf("%s: %d of %d syncs owned after %v", when, sm.owned.Load(), n, limit)
	}
}

// leave makes the member leave with a 10s ctx.
func (sm *simMember) leave(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sm.co.Leave(ctx); err != nil {
		t.Fatal(err)
	}
}

package coordinator

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/recorder"
)

// bareWorker is one member's worker on a real etcd with no leader and no
// watches: the test calls applyTarget and applySpec itself, so it decides
// exactly when the target changes.
type bareWorker struct {
	t       *testing.T
	cli     *clientv3.Client
	store   *SyncStore
	w       *worker
	rec     *recorder.Recorder
	assigns atomic.Int64
}

func newBareWorker(t *testing.T) *bareWorker {
	t.Helper()
	cluster := etcdtest.NewCluster(t, 1)
	b := &bareWorker{t: t, cli: cluster.Client(t), rec: recorder.New()}
	b.store = NewSyncStore(b.cli, "g")
	h := HandlerFuncs{
		Assign: func(_ context.Context, c *assignment.Claim) error {
			b.assigns.Add(1)
			b.rec.Start("m1", c.ID(), c.Token())
			return nil
		},
		Revoke: func(_ context.Context, c *assignment.Claim, _ assignment.RevokeReason) {
			b.rec.End("m1", c.ID(), c.Token())
		},
	}
	c, err := New(b.cli, "g", h, WithMemberID("m1"), WithTTL(2*time.Second))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sess, err := newSession(ctx, b.cli, c.o.ttl, c.o.revokeTimeout, c.log, c.m)
	require.NoError(t, err)
	ectx, stop := context.WithCancel(context.Background())
	b.w = newWorker(ectx, c, sess)
	t.Cleanup(func() {
		b.w.leaveAll()
		if !waitUntilInternal(10*time.Second, func() bool { return b.w.actorCount() == 0 }) {
			t.Errorf("actors still running: %d", b.w.actorCount())
		}
		stop()
		b.w.actorsWG.Wait()
		rctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		sess.closeAndRevoke(rctx)
		require.NoError(t, b.rec.Check(), "single owner")
	})
	return b
}

func waitUntilInternal(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

func (b *bareWorker) ownerKey(id string) *mvccpb.KeyValue {
	resp, err := b.cli.Get(context.Background(), b.w.c.keys.Owner(id))
	require.NoError(b.t, err)
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0]
}

func (b *bareWorker) owned(id string) *assignment.Claim {
	for _, c := range b.w.c.Owned() {
		if c.ID() == id {
			return c
		}
	}
	return nil
}

// gate blocks the first call that passes it for sync id until opened, and
// tells when that call arrived.
type gate struct {
	id      string
	once    sync.Once
	arrived chan struct{}
	open    chan struct{}
}

func newGate(id string) *gate {
	return &gate{id: id, arrived: make(chan struct{}), open: make(chan struct{})}
}

func (g *gate) pass(id string) {
	if id != g.id {
		return
	}
	g.once.Do(func() {
		close(g.arrived)
		<-g.open
	})
}

// An actor that claimed a sync but is no longer wanted gives the key back.
// Before the fix it left the worker's map first: a new actor for the same
// sync, started meanwhile, found the key still there as its own and ran
// with it; then the old actor's delete (guarded by the same token) went
// through, and the sync ran with no owner key, free for any other member
// to claim.
func TestNoAdoptionWhileAReleaseIsPending(t *testing.T) {
	start, giveBack := newGate("s"), newGate("s")
	SetTestHooks(t, TestHooks{ActorStart: start.pass, GiveBack: giveBack.pass})
	b := newBareWorker(t)
	ctx := context.Background()
	require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s"}))

	b.w.applyTarget([]string{"s"}) // claims s; its actor waits at the start gate
	require.NotNil(t, b.ownerKey("s"))
	b.w.applyTarget(nil) // s is no longer wanted
	close(start.open)
	<-giveBack.arrived // the actor is about to delete its key
	b.w.applyTarget([]string{"s"})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deletes := b.cli.Watch(wctx, b.w.c.keys.Owner("s"), clientv3.WithFilterPut())
	close(giveBack.open)
	select {
	case <-deletes:
	case <-time.After(10 * time.Second):
		t.Fatal("the unwanted claim was not given back")
	}
	require.True(t, waitUntilInternal(10*time.Second, func() bool {
		kv, c := b.ownerKey("s"), b.owned("s")
		return kv != nil && c != nil && kv.CreateRevision == c.Token()
	}), "s runs with its owner key held: key %v, claim %v", b.ownerKey("s"), b.owned("s"))
}

// failingKV fails the first n Txns; with applied, each is sent to etcd
// first, as a request that went through but whose answer was lost.
type failingKV struct {
	clientv3.KV
	applied bool
	n       atomic.Int64
}

func (k *failingKV) Txn(ctx context.Context) clientv3.Txn {
	return &failingTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type failingTxn struct {
	clientv3.Txn
	kv *failingKV
}

func (t *failingTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.Txn = t.Txn.If(cs...); return t }
func (t *failingTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Then(ops...); return t }
func (t *failingTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *failingTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.kv.n.Add(-1) < 0 {
		return t.Txn.Commit()
	}
	if t.kv.applied {
		if _, err := t.Txn.Commit(); err != nil {
			return nil, err
		}
	}
	return nil, errors.New("test: injected etcd error")
}

// A sync claimed with an unreadable spec is given back even when the first
// delete fails. Before the fix that delete was tried once ("the lease will
// free it", which it does not while the member lives).
func TestReleaseOfAnUnrunnableSyncIsRetried(t *testing.T) {
	b := newBareWorker(t)
	fail := &failingKV{KV: b.cli}
	fail.n.Store(1)
	b.w.releaseTxns.cli = fail
	_, err := b.cli.Put(context.Background(), b.w.c.keys.Sync("s"), "{not json")
	require.NoError(t, err)
	b.w.applyTarget([]string{"s"})
	require.True(t, waitUntilInternal(10*time.Second, func() bool {
		return b.ownerKey("s") == nil && fail.n.Load() < 0
	}), "the owner key of the unrunnable sync was deleted after a failed try")
	require.Zero(t, b.assigns.Load())
}

// A claim that etcd applied but whose answer was an error is not left
// behind when the sync is no longer wanted. Before the fix the actor left
// without knowing the key was there, on a lease that lives on.
func TestClaimAppliedDespiteAnErrorIsGivenBack(t *testing.T) {
	start := newGate("s")
	SetTestHooks(t, TestHooks{ActorStart: start.pass})
	b := newBareWorker(t)
	fail := &failingKV{KV: b.cli, applied: true}
	fail.n.Store(1)
	b.w.claimTxns.cli = fail
	require.NoError(t, b.store.Put(context.Background(), assignment.Sync{ID: "s"}))
	b.w.applyTarget([]string{"s"}) // the batched claim goes through, its answer is lost
	require.NotNil(t, b.ownerKey("s"), "the claim was applied")
	b.w.applyTarget(nil)
	close(start.open)
	require.True(t, waitUntilInternal(10*time.Second, func() bool { return b.ownerKey("s") == nil }),
		"the owner key of the claim whose answer was lost was deleted")
	require.Zero(t, b.assigns.Load())
}

// OnAssign never starts once the lease is at risk: the member could not
// stop the work by its deadline. Before the fix the worker called it
// anyway, after a claim and after an OnRevoke(SpecChanged).
func TestNoAssignOnceTheLeaseIsAtRisk(t *testing.T) {
	for _, respec := range []bool{false, true} {
		name := map[bool]string{false: "claim", true: "respec"}[respec]
		t.Run(name, func(t *testing.T) {
			var calls atomic.Int64
			var b *bareWorker
			lose := 1
			if respec {
				lose = 2
			}
			SetTestHooks(t, TestHooks{BeforeAssign: func(id string, lost <-chan struct{}) {
				if calls.Add(1) == int64(lose) {
					b.w.sess.markAtRisk(errors.New("test: lease at risk"))
					<-lost
				}
			}})
			b = newBareWorker(t)
			ctx := context.Background()
			require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{"v":1}`)}))
			b.w.applyTarget([]string{"s"})
			if respec {
				require.True(t, waitUntilInternal(10*time.Second, func() bool { return b.assigns.Load() == 1 }))
				require.NoError(t, b.store.Put(ctx, assignment.Sync{ID: "s", Spec: []byte(`{"v":2}`)}))
				resp, err := b.cli.Get(ctx, b.w.c.keys.Sync("s"))
				require.NoError(t, err)
				b.w.applySpec(resp.Kvs[0], false)
			}
			require.True(t, waitUntilInternal(10*time.Second, func() bool {
				return calls.Load() == int64(lose) && b.w.actorCount() == 0
			}), "the actor stopped")
			require.Equal(t, int64(lose-1), b.assigns.Load(), "no OnAssign after the lease came at risk")
		})
	}
}

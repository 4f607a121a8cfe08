package coordinator

import (
	"context"
	"errors"
	"strings"
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
// exactly when the target changes. Or the test starts the worker's own
// loop with run, and drives it through etcd.
type bareWorker struct {
	t       *testing.T
	cli     *clientv3.Client
	store   *SyncStore
	w       *worker
	rec     *recorder.Recorder
	assigns atomic.Int64
	runDone chan struct{} // closed when the loop started by run has returned
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
	// Registered first, so it runs last: the loop ends once the cleanup
	// below has stopped the worker.
	t.Cleanup(func() {
		if b.runDone != nil {
			<-b.runDone
		}
	})
	t.Cleanup(func() {
		b.w.leaveAll()
		if !etcdtest.WaitUntil(10*time.Second, func() bool { return b.w.actorCount() == 0 }) {
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

// run starts the worker's loop (its watches of the target and the specs);
// it ends at the test's cleanup.
func (b *bareWorker) run() {
	b.runDone = make(chan struct{})
	go func() { defer close(b.runDone); b.w.run() }()
}

// interceptTxns puts f between the worker and etcd (see ctlKV); call it
// before the worker runs.
func (b *bareWorker) interceptTxns(f txnIntercept) {
	b.cli.KV = &ctlKV{KV: b.cli.KV, intercept: f}
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

func (b *bareWorker) goneMark(id string) bool {
	b.w.mu.Lock()
	defer b.w.mu.Unlock()
	return b.w.gone[id]
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

// txnIntercept decides what happens to a Txn sent through a ctlKV.
type txnIntercept func(tx *ctlTxn) (resp *clientv3.TxnResponse, err error, handled bool)

// ctlKV lets a test decide, per Txn, what happens to it: intercept gets
// the Txn's operations and a commit function that sends it (with any ctx:
// a Txn already on its way to etcd is applied whatever becomes of the
// sender's ctx), and returns what the caller sees. With no intercept, or
// when it returns handled false, the Txn commits as usual.
type ctlKV struct {
	clientv3.KV
	mu        sync.Mutex
	intercept txnIntercept
}

func (k *ctlKV) setIntercept(f txnIntercept) {
	k.mu.Lock()
	k.intercept = f
	k.mu.Unlock()
}

func (k *ctlKV) Txn(ctx context.Context) clientv3.Txn { return &ctlTxn{kv: k, ctx: ctx} }

type ctlTxn struct {
	kv        *ctlKV
	ctx       context.Context
	cmps      []clientv3.Cmp
	then, els []clientv3.Op
}

func (t *ctlTxn) If(cs ...clientv3.Cmp) clientv3.Txn   { t.cmps = append(t.cmps, cs...); return t }
func (t *ctlTxn) Then(ops ...clientv3.Op) clientv3.Txn { t.then = append(t.then, ops...); return t }
func (t *ctlTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.els = append(t.els, ops...); return t }

// commit sends the Txn with ctx.
func (t *ctlTxn) commit(ctx context.Context) (*clientv3.TxnResponse, error) {
	return t.kv.KV.Txn(ctx).If(t.cmps...).Then(t.then...).Else(t.els...).Commit()
}

func (t *ctlTxn) Commit() (*clientv3.TxnResponse, error) {
	t.kv.mu.Lock()
	f := t.kv.intercept
	t.kv.mu.Unlock()
	if f != nil {
		if resp, err, handled := f(t); handled {
			return resp, err
		}
	}
	return t.commit(t.ctx)
}

// puts reports whether the Txn's Then puts key.
func (t *ctlTxn) puts(key string) bool { return hasOp(t.then, key, clientv3.Op.IsPut) }

// reads reports whether the Txn's Then reads key.
func (t *ctlTxn) reads(key string) bool { return hasOp(t.then, key, clientv3.Op.IsGet) }

// claims reports whether the Txn holds a nested claim putting key.
func (t *ctlTxn) claims(key string) bool { return t.nested(key, clientv3.Op.IsPut) }

// releases reports whether the Txn holds a nested release deleting key.
func (t *ctlTxn) releases(key string) bool { return t.nested(key, clientv3.Op.IsDelete) }

// nested reports whether the Txn's Then holds a Txn whose Then has an
// operation on key for which is holds.
func (t *ctlTxn) nested(key string, is func(clientv3.Op) bool) bool {
	for _, op := range t.then {
		if !op.IsTxn() {
			continue
		}
		if _, then, _ := op.Txn(); hasOp(then, key, is) {
			return true
		}
	}
	return false
}

func hasOp(ops []clientv3.Op, key string, is func(clientv3.Op) bool) bool {
	for _, op := range ops {
		if is(op) && string(op.KeyBytes()) == key {
			return true
		}
	}
	return false
}

const statusKeySuffix = "/status/leader"

// touchesStatus reports whether any of the Txn's Then operations is on
// status/leader: a status report, or the last Txn of a plan (it carries the
// generation).
func (t *ctlTxn) touchesStatus() bool {
	for _, op := range t.then {
		if strings.HasSuffix(string(op.KeyBytes()), statusKeySuffix) {
			return true
		}
	}
	return false
}

// statusOnly reports whether the Txn's Then has operations, all of them on
// status/leader: a status report, not part of a plan.
func (t *ctlTxn) statusOnly() bool {
	for _, op := range t.then {
		if !strings.HasSuffix(string(op.KeyBytes()), statusKeySuffix) {
			return false
		}
	}
	return len(t.then) > 0
}

// failFirstTxns is an intercept that fails the first n Txns; with applied,
// each is sent to etcd first, as a request that went through but whose
// answer was lost. seen tells how many Txns it has been given.
func failFirstTxns(n int64, applied bool) (f txnIntercept, seen func() int64) {
	var calls atomic.Int64
	f = func(tx *ctlTxn) (*clientv3.TxnResponse, error, bool) {
		if calls.Add(1) > n {
			return nil, nil, false
		}
		if applied {
			if _, err := tx.commit(tx.ctx); err != nil {
				return nil, err, true
			}
		}
		return nil, errors.New("test: injected etcd error"), true
	}
	return f, calls.Load
}

// interceptLeaderKV puts f between the leader and etcd for its target and
// status writes until t ends; call it before the leader starts.
func interceptLeaderKV(t *testing.T, f txnIntercept) {
	testHookLeaderKV = func(inner clientv3.KV) clientv3.KV { return &ctlKV{KV: inner, intercept: f} }
	t.Cleanup(func() { testHookLeaderKV = nil })
}

// breakableWatcher passes watches through, and lets a test break the ones
// on key (their channels close, as on an etcd leader loss).
type breakableWatcher struct {
	clientv3.Watcher
	key string

	mu     sync.Mutex
	breaks []chan struct{}
}

func (bw *breakableWatcher) Watch(ctx context.Context, key string, opts ...clientv3.OpOption) clientv3.WatchChan {
	ch := bw.Watcher.Watch(ctx, key, opts...)
	if key != bw.key {
		return ch
	}
	brk := make(chan struct{})
	bw.mu.Lock()
	bw.breaks = append(bw.breaks, brk)
	bw.mu.Unlock()
	out := make(chan clientv3.WatchResponse)
	go func() {
		defer close(out)
		for {
			select {
			case wr, ok := <-ch:
				if !ok {
					return
				}
				select {
				case out <- wr:
				case <-brk:
					return
				case <-ctx.Done():
					return
				}
			case <-brk:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (bw *breakableWatcher) breakAll() {
	bw.mu.Lock()
	defer bw.mu.Unlock()
	for _, b := range bw.breaks {
		close(b)
	}
	bw.breaks = nil
}

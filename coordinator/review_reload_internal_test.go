package coordinator

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
)

// hookKV runs beforeCommit with a Txn's Then operations before it commits.
type hookKV struct {
	clientv3.KV
	beforeCommit func(then []clientv3.Op)
}

func (k *hookKV) Txn(ctx context.Context) clientv3.Txn {
	return &hookTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type hookTxn struct {
	clientv3.Txn
	kv   *hookKV
	then []clientv3.Op
}

func (t *hookTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *hookTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.then = append(t.then, ops...)
	t.Txn = t.Txn.Then(ops...)
	return t
}
func (t *hookTxn) Else(ops ...clientv3.Op) clientv3.Txn { t.Txn = t.Txn.Else(ops...); return t }

func (t *hookTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.kv.beforeCommit != nil {
		t.kv.beforeCommit(t.then)
	}
	return t.Txn.Commit()
}

func readsKey(ops []clientv3.Op, key string) bool {
	for _, op := range ops {
		if op.IsGet() && string(op.KeyBytes()) == key {
			return true
		}
	}
	return false
}

// A reload reads the specs of the syncs it has an opinion on at one
// revision, then the target at a later one, and the watches resume after
// the target's revision: a spec change that falls between the two reads is
// never seen. Here the fix of a sync marked gone lands in that gap: the
// sync stays gone, targeted here with a valid spec, and never runs (until
// the next watch break). The same gap hides a spec change of an owned sync.
func TestReloadMissesASpecChangeBetweenItsReads(t *testing.T) {
	b := newBareWorker(t)
	ctx := context.Background()
	syncKey, targetKey := b.w.c.keys.Sync("s"), b.w.c.keys.Target("m1")
	_, err := b.cli.Put(ctx, syncKey, "{not json")
	require.NoError(t, err)
	_, err = b.cli.Put(ctx, targetKey, string(encodeTarget(1, []string{"s"})))
	require.NoError(t, err)
	_, _, err = b.w.load() // claims s, finds it unreadable: gone
	require.NoError(t, err)
	require.True(t, waitUntilInternal(10*time.Second, func() bool {
		return b.goneMark("s") && b.w.actorCount() == 0
	}), "s is marked gone")

	// The watches broke; the fix lands after the reload read the specs,
	// just before it reads the target.
	fix, err := encodeSync(assignment.Sync{ID: "s", Spec: []byte(`{"v":2}`)})
	require.NoError(t, err)
	hk := &hookKV{KV: b.cli.KV}
	var once sync.Once
	var fixed atomic.Bool
	hk.beforeCommit = func(then []clientv3.Op) {
		if readsKey(then, targetKey) {
			once.Do(func() {
				_, err := hk.KV.Put(ctx, syncKey, string(fix))
				fixed.Store(err == nil)
			})
		}
	}
	b.cli.KV = hk // no goroutine of the worker uses the client's KV now
	rev, specRev, err := b.w.reload()
	require.NoError(t, err)
	require.True(t, fixed.Load(), "the fix was written during the reload")
	// Follow from the revisions the reload returned, as run does.
	b.w.actorsWG.Add(1)
	go func() { defer b.w.actorsWG.Done(); b.w.follow(rev, specRev) }()
	require.True(t, waitUntilInternal(10*time.Second, func() bool { return b.owned("s") != nil }),
		"s, fixed during the reload, runs; gone=%v", b.goneMark("s"))
}

package coordinator

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/etcdtest"
)

// statusFaultKV fails the leader's target Txns (not applied) while
// failTargets is set, and applies its status/leader writes but answers
// them with an error (the reply was lost) while loseStatus is set.
type statusFaultKV struct {
	clientv3.KV
	failTargets, loseStatus atomic.Bool
	lost                    atomic.Int32
}

func (k *statusFaultKV) Txn(ctx context.Context) clientv3.Txn {
	return &statusFaultTxn{Txn: k.KV.Txn(ctx), kv: k}
}

type statusFaultTxn struct {
	clientv3.Txn
	kv     *statusFaultKV
	status bool
}

func (t *statusFaultTxn) If(cs ...clientv3.Cmp) clientv3.Txn { t.Txn = t.Txn.If(cs...); return t }
func (t *statusFaultTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	for _, op := range ops {
		t.status = t.status || strings.HasSuffix(string(op.KeyBytes()), "/status/leader")
	}
	t.Txn = t.Txn.Then(ops...)
	return t
}

func (t *statusFaultTxn) Commit() (*clientv3.TxnResponse, error) {
	switch {
	case t.status && t.kv.loseStatus.Load():
		if _, err := t.Txn.Commit(); err != nil {
			return nil, err
		}
		t.kv.lost.Add(1)
		return nil, errors.New("injected: status reply lost")
	case !t.status && t.kv.failTargets.Load():
		return nil, errors.New("injected: target write failed")
	}
	return t.Txn.Commit()
}

// TestPlanErrorIsClearedAfterALostStatusReply: the leader writes
// status/leader for a failed round; etcd applies the write but the reply
// is lost, so the leader records no plan error (v.planError stays "").
// Once the plan is written, clearPlanError sees nothing to clear, and
// Describe reports the old plan error for as long as this leader leads,
// although all is well.
func TestPlanErrorIsClearedAfterALostStatusReply(t *testing.T) {
	kv := &statusFaultKV{}
	var mu sync.Mutex
	testHookLeaderKV = func(inner clientv3.KV) clientv3.KV {
		mu.Lock()
		defer mu.Unlock()
		kv.KV = inner
		return kv
	}
	t.Cleanup(func() { testHookLeaderKV = nil })
	kv.failTargets.Store(true)
	kv.loseStatus.Store(true)

	cl := etcdtest.NewCluster(t, 1)
	cli := cl.Client(t)
	all := putSyncs(t, cli, "lost", 5)
	c, err := New(cli, "lost", HandlerFuncs{}, WithMemberID("m1"), WithTTL(time.Second), WithSettle(50*time.Millisecond))
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, c.Join(ctx))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Leave(ctx)
	})

	// A failed round reported; the report is in etcd, its reply lost.
	require.Eventually(t, func() bool {
		st, err := Describe(ctx, cli, "lost")
		return err == nil && st.PlanError != "" && kv.lost.Load() > 0
	}, 10*time.Second, 10*time.Millisecond)
	kv.loseStatus.Store(false)
	kv.failTargets.Store(false)
	require.Eventually(t, func() bool { return slices.Equal(all, ownedIDs(c)) }, 10*time.Second, 10*time.Millisecond)

	// One more successful round, for good measure.
	require.NoError(t, NewSyncStore(cli, "lost").Put(ctx, assignment.Sync{ID: all[0], Spec: []byte(`{"v":2}`)}))
	var st *GroupStatus
	ok := pollUntil(10*time.Second, func() bool {
		st, err = Describe(ctx, cli, "lost")
		return err == nil && st.Pending == 0 && st.PlanError == ""
	})
	require.True(t, ok, "a healthy group still shows a plan error: %q", st.PlanError)
}

func pollUntil(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
	return true
}

package coordinator

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// fakeTxnKV is a clientv3.KV whose Txns answer every nested Txn with
// success, and record which keys each Txn carried. A Txn whose number is in
// stall blocks until its context ends, like one sent to an etcd member that
// stopped answering. Only Txn is implemented: it is all a txnBatcher uses.
type fakeTxnKV struct {
	clientv3.KV

	stall map[int]bool

	mu   sync.Mutex
	txns [][]string // keys of each Txn, in commit order
}

func (k *fakeTxnKV) Txn(ctx context.Context) clientv3.Txn { return &fakeTxn{kv: k, ctx: ctx} }

func (k *fakeTxnKV) committed() [][]string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([][]string(nil), k.txns...)
}

type fakeTxn struct {
	kv  *fakeTxnKV
	ctx context.Context
	ops []clientv3.Op
}

func (t *fakeTxn) If(...clientv3.Cmp) clientv3.Txn  { return t }
func (t *fakeTxn) Else(...clientv3.Op) clientv3.Txn { return t }
func (t *fakeTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.ops = append(t.ops, ops...)
	return t
}

func (t *fakeTxn) Commit() (*clientv3.TxnResponse, error) {
	var keys []string
	for _, op := range t.ops {
		_, then, _ := op.Txn()
		keys = append(keys, string(then[0].KeyBytes()))
	}
	t.kv.mu.Lock()
	n := len(t.kv.txns)
	t.kv.txns = append(t.kv.txns, keys)
	t.kv.mu.Unlock()
	if t.kv.stall[n] {
		<-t.ctx.Done()
		return nil, t.ctx.Err()
	}
	resp := &pb.TxnResponse{Header: &pb.ResponseHeader{Revision: int64(100 + n)}, Succeeded: true}
	for range t.ops {
		resp.Responses = append(resp.Responses, &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: &pb.TxnResponse{Succeeded: true}}})
	}
	return (*clientv3.TxnResponse)(resp), nil
}

func guardedPut(key string) batchReq {
	return batchReq{key: key, op: clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
		[]clientv3.Op{clientv3.OpPut(key, "m")}, nil)}
}

func TestBatcherSharesTxnsAndNeverRepeatsAKey(t *testing.T) {
	kv := &fakeTxnKV{}
	b := &txnBatcher{cli: kv, ctx: context.Background(), timeout: 10 * time.Second}
	// 300 requests from 30 callers at once, on 200 keys: some keys are
	// asked for twice.
	var wg sync.WaitGroup
	for c := range 30 {
		wg.Go(func() {
			reqs := make([]batchReq, 10)
			for i := range reqs {
				reqs[i] = guardedPut(fmt.Sprintf("k%d", (c*10+i)%200))
			}
			for _, r := range b.do(reqs) {
				assert.NoError(t, r.err)
				assert.True(t, r.resp.Succeeded)
				assert.Positive(t, r.rev)
			}
		})
	}
	wg.Wait()
	total := 0
	for i, keys := range kv.committed() {
		assert.LessOrEqual(t, len(keys), maxBatch, "Txn %d", i)
		seen := map[string]bool{}
		for _, k := range keys {
			assert.False(t, seen[k], "Txn %d carries %s twice", i, k)
			seen[k] = true
		}
		total += len(keys)
	}
	assert.Equal(t, 300, total, "every request went exactly once")
	assert.Less(t, len(kv.committed()), 300, "requests made together share Txns")
}

// TestBatcherHedgesAStuckTxn: a Txn that hangs (sent to an etcd member that
// stopped answering) must not hold up the requests queued behind it until
// it times out.
func TestBatcherHedgesAStuckTxn(t *testing.T) {
	kv := &fakeTxnKV{stall: map[int]bool{0: true}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b := &txnBatcher{cli: kv, ctx: ctx, timeout: time.Hour}

	stuck := make(chan []batchReq, 1)
	go func() { stuck <- b.do([]batchReq{guardedPut("a")}) }()
	require.Eventually(t, func() bool { return len(kv.committed()) == 1 }, 10*time.Second, time.Millisecond)

	// Queued behind the stuck Txn, these go in a Txn of their own and
	// succeed while it still hangs.
	res := b.do([]batchReq{guardedPut("b"), guardedPut("c")})
	for _, r := range res {
		require.NoError(t, r.err)
	}
	select {
	case <-stuck:
		t.Fatal("the stuck Txn returned before it was abandoned")
	default:
	}
	assert.Equal(t, [][]string{{"a"}, {"b", "c"}}, kv.committed())

	// The stuck request fails once its Txn is abandoned, and is not sent
	// again: a claim that went through anyway is adopted on the next try.
	cancel()
	r := <-stuck
	assert.ErrorIs(t, r[0].err, context.Canceled)
	assert.Len(t, kv.committed(), 2)
}

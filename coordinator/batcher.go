package coordinator

import (
	"context"
	"runtime"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/wait"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// txnBatcher runs owner-key operations in shared Txns (group commit): a
// request made while no Txn of the batcher is in flight goes at once (after
// one runtime.Gosched, so that the requests made at the same instant join
// it), and the requests made meanwhile go together in the next Txn, up to
// maxBatch. When a rebalance moves many syncs, their claims (and their
// releases) then cost a few Txns instead of one each: on a busy etcd the
// handoff gap is the queue of those Txns. Each request is a nested Txn
// with its own guard, so requests never fail each other; two requests on
// one key never share a Txn (etcd rejects duplicate keys in a Txn). A
// request stuck behind a Txn that does not return is sent in a Txn of its
// own after hedgeAfter.
type txnBatcher struct {
	cli     clientv3.KV
	ctx     context.Context // the Txns' parent: ends with the worker or session
	timeout time.Duration   // of one Txn

	// mu guards queue, inflight and batchReq.taken. A leaf (see worker):
	// commitLocked lets go of it around each Txn.
	mu       sync.Mutex
	queue    []*batchReq
	inflight int // Txns being committed
}

// maxBatch is how many nested Txns one batch holds: etcd counts the outer
// Txn's operations and the largest nested Txn's compares or operations
// (two, for a claim) together against --max-txn-ops.
const maxBatch = maxTxnOps - 2

// maxBatchesInFlight is how many Txns of one batcher may be in flight.
// One measured best: with two to four, more requests went alone and a
// rebalance of 90 syncs lost most of the gain.
const maxBatchesInFlight = 1

// hedgeAfter is how long a request waits in the queue behind a Txn in
// flight before its caller sends the queue in a Txn of its own. A Txn
// routed to an etcd member that stopped answering (a partition gRPC has not
// noticed yet) only fails after the batcher's timeout, TTL/2; without the
// hedge every claim or release of the worker would wait that long behind
// it. A request is never sent twice, so a hedge on a merely slow Txn only
// costs some batching.
const hedgeAfter = 100 * time.Millisecond

// batchReq is one nested Txn on one owner key and, once done is closed,
// its outcome.
type batchReq struct {
	key   string
	op    clientv3.Op
	taken bool // in a Txn already; guarded by txnBatcher.mu
	done  chan struct{}
	resp  *clientv3.TxnResponse
	rev   int64 // revision of the Txn that ran it
	err   error
}

// do runs reqs and returns them with their outcome. A caller that finds
// fewer than maxBatchesInFlight Txns in flight commits the queue, its own
// requests and others', until it is empty; the others wait, and hedge
// (see hedgeAfter) if their requests are still queued after a while.
func (b *txnBatcher) do(reqs []batchReq) []batchReq {
	b.mu.Lock()
	for i := range reqs {
		reqs[i].done = make(chan struct{})
		b.queue = append(b.queue, &reqs[i])
	}
	b.commitLocked(maxBatchesInFlight)
	b.mu.Unlock()
	for i := range reqs {
		// Each time hedgeAfter passes with the request not done, hedge.
		for wait.SleepOrWake(context.Background(), hedgeAfter, reqs[i].done) {
			b.mu.Lock()
			if !reqs[i].taken {
				b.commitLocked(b.inflight + 1)
			}
			b.mu.Unlock()
		}
	}
	return reqs
}

// commitLocked commits the queue, one Txn after another, while fewer than
// limit Txns are in flight. b.mu is held on entry and on return, not while
// a Txn is in flight.
func (b *txnBatcher) commitLocked(limit int) {
	for len(b.queue) > 0 && b.inflight < limit {
		b.inflight++
		// Requests made at the same instant (the revokes of one target
		// change) get a chance to join this Txn.
		b.mu.Unlock()
		runtime.Gosched()
		b.mu.Lock()
		batch := b.takeLocked()
		b.mu.Unlock()
		b.commit(batch)
		b.mu.Lock()
		b.inflight--
	}
}

// takeLocked removes up to maxBatch requests on distinct keys from the
// queue.
func (b *txnBatcher) takeLocked() []*batchReq {
	seen := make(map[string]bool, min(len(b.queue), maxBatch))
	var batch, rest []*batchReq
	for _, r := range b.queue {
		if len(batch) < maxBatch && !seen[r.key] {
			seen[r.key] = true
			r.taken = true
			batch = append(batch, r)
		} else {
			rest = append(rest, r)
		}
	}
	b.queue = rest
	return batch
}

func (b *txnBatcher) commit(batch []*batchReq) {
	ops := make([]clientv3.Op, len(batch))
	for i, r := range batch {
		ops[i] = r.op
	}
	// A Txn stuck on an unresponsive etcd member (a partition the client
	// has not noticed yet) must not hold the worker up: it is abandoned
	// after the timeout (TTL/2) and its requests fail; a claim that went
	// through anyway is found as this session's on the next try and
	// adopted.
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout)
	resp, err := b.cli.Txn(ctx).Then(ops...).Commit()
	cancel()
	for i, r := range batch {
		if err != nil {
			r.err = err
		} else {
			r.resp = (*clientv3.TxnResponse)(resp.Responses[i].GetResponseTxn())
			r.rev = resp.Header.Revision
		}
		close(r.done)
	}
}

package coordinator

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
)

// claimBatchSize keeps a claim Txn within etcd's default --max-txn-ops
// (128): each sync costs two compares and two operations.
const claimBatchSize = 64

// claimResult is what one claim attempt learned about one sync.
type claimResult struct {
	claimed bool  // this member now holds owners/<sync> with token
	token   int64 // create revision of the owner key (ours or the holder's)
	mine    bool  // the owner key already belongs to this session (adopt it)
	rev     int64 // revision the attempt read at: watch for release from rev+1

	sync    assignment.Sync
	syncErr error // the sync is gone or its spec cannot be read

	holder string // member holding the owner key when not claimed
}

// claim tries to claim every sync in ids, batched: one Txn per 64 syncs
// claims them all when all are free; otherwise it learns which are free
// from the same Txn's else-branch reads and retries with those only. The
// result has an entry for every id unless err is set.
func (w *worker) claim(ctx context.Context, ids []string) (map[string]*claimResult, error) {
	out := make(map[string]*claimResult, len(ids))
	for start := 0; start < len(ids); start += claimBatchSize {
		batch := ids[start:min(start+claimBatchSize, len(ids))]
		// Each retry only keeps syncs seen free, so it shrinks or succeeds;
		// three rounds cover all but a storm of concurrent changes, and
		// what is left is retried by each sync's own actor.
		for round := 0; round < 3 && len(batch) > 0; round++ {
			free, err := w.claimOnce(ctx, batch, out)
			if err != nil {
				return nil, err
			}
			batch = free
		}
		for _, id := range batch {
			if _, ok := out[id]; !ok {
				out[id] = &claimResult{}
			}
		}
	}
	return out, nil
}

// claimOnce runs one claim Txn over batch, records every sync it settled in
// out and returns the syncs it saw free but could not claim in this round.
func (w *worker) claimOnce(ctx context.Context, batch []string, out map[string]*claimResult) ([]string, error) {
	k := w.c.keys
	cmps := make([]clientv3.Cmp, 0, 2*len(batch))
	then := make([]clientv3.Op, 0, 2*len(batch))
	els := make([]clientv3.Op, 0, 2*len(batch))
	for _, id := range batch {
		cmps = append(cmps,
			clientv3.Compare(clientv3.CreateRevision(k.Owner(id)), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(k.Sync(id)), ">", 0))
		then = append(then,
			clientv3.OpPut(k.Owner(id), w.c.o.memberID, clientv3.WithLease(w.sess.id)),
			clientv3.OpGet(k.Sync(id)))
		els = append(els, clientv3.OpGet(k.Owner(id)), clientv3.OpGet(k.Sync(id)))
	}
	// A Txn stuck on an unresponsive etcd member (a partition the client has
	// not noticed yet) must not hold the worker up: it is abandoned after
	// TTL/2, like a release, and tried again. One that went through is
	// found as this session's on the next try and adopted.
	tctx, cancel := context.WithTimeout(ctx, w.sess.ttl/2)
	defer cancel()
	resp, err := w.c.cli.Txn(tctx).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		w.c.m.etcdError("claim")
		return nil, fmt.Errorf("coordinator: claim: %w", err)
	}
	rev := resp.Header.Revision
	var free []string
	for i, id := range batch {
		r := &claimResult{rev: rev}
		syncKVs := resp.Responses[2*i+1].GetResponseRange().Kvs
		if len(syncKVs) == 0 {
			r.syncErr = fmt.Errorf("coordinator: sync %q does not exist", id)
		} else {
			r.sync, r.syncErr = decodeSync(id, syncKVs[0].Value, syncKVs[0].ModRevision)
		}
		if resp.Succeeded {
			// Every put of one Txn has the Txn's revision as create revision.
			r.claimed, r.token = true, rev
			out[id] = r
			continue
		}
		ownerKVs := resp.Responses[2*i].GetResponseRange().Kvs
		switch {
		case len(ownerKVs) == 1 && clientv3.LeaseID(ownerKVs[0].Lease) == w.sess.id:
			r.mine, r.token = true, ownerKVs[0].CreateRevision
		case len(ownerKVs) == 1:
			r.holder, r.token = string(ownerKVs[0].Value), ownerKVs[0].CreateRevision
		case r.syncErr == nil:
			free = append(free, id)
			continue
		}
		out[id] = r
	}
	return free, nil
}

// release deletes the owner key of c, guarded by its token, so a key that
// is no longer ours is never touched. It retries until it succeeds or the
// session is at risk (an abandoned lease takes its keys with it).
func (w *worker) release(c *assignment.Claim) {
	delay := retryMin
	for {
		err := w.deleteOwner(c.ID(), c.Token())
		if err == nil || w.sess.riskCtx.Err() != nil {
			return
		}
		w.c.m.etcdError("release")
		w.c.log.Warn("release failed, retrying", "sync", c.ID(), "token", c.Token(), "error", err)
		if !sleepCtx(w.sess.riskCtx, delay) {
			return
		}
		delay = min(2*delay, retryMax)
	}
}

// deleteOwner deletes owners/<id> if it still has the given token.
func (w *worker) deleteOwner(id string, token int64) error {
	ctx, cancel := context.WithTimeout(w.sess.riskCtx, w.sess.ttl/2)
	defer cancel()
	key := w.c.keys.Owner(id)
	_, err := w.c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", token)).
		Then(clientv3.OpDelete(key)).Commit()
	return err
}

package coordinator

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/assignment"
	"github.com/baton-go/baton/internal/keys"
)

const (
	retryMin = 50 * time.Millisecond
	retryMax = 5 * time.Second
	// failBackoffMin and failBackoffMax bound the wait before a sync whose
	// OnAssign or run failed is claimed again.
	failBackoffMin = 100 * time.Millisecond
	failBackoffMax = 30 * time.Second
)

// worker is the member side of one session: it follows targets/<self> and
// the specs of the syncs it holds, and keeps one actor per sync that it
// should own or still owns.
type worker struct {
	c    *Coordinator
	sess *session
	ctx  context.Context // ends with the session's epoch

	mu      sync.Mutex
	target  map[string]bool // sync IDs in targets/<self>
	gone    map[string]bool // syncs seen deleted or with an unreadable spec
	actors  map[string]*actor
	leaving bool
	loaded  bool // the target has been read at least once

	actorsWG sync.WaitGroup

	// claimTxns and releaseTxns share Txns among the actors (group
	// commit). Releases run on the session's context: a release must go
	// out even as the epoch ends, until the lease is at risk.
	claimTxns, releaseTxns *txnBatcher
	// releases is the owners/ watch of the actors waiting for a holder.
	releases *releaseWatch
}

// actor runs one sync's lifecycle on its own goroutine, so that callbacks
// for one sync are serial and different syncs never wait for each other.
// Its fields are guarded by worker.mu.
type actor struct {
	id      string
	want    bool
	reason  assignment.RevokeReason // why, once want is false
	spec    *assignment.Sync        // newest spec seen by the syncs watch
	failure error                   // reported by a Runner's run function
	since   time.Time               // when want last became true
	kick    chan struct{}           // capacity 1: "look at your fields again"
}

func newWorker(ctx context.Context, c *Coordinator, s *session) *worker {
	w := &worker{
		c: c, sess: s, ctx: ctx, target: map[string]bool{}, gone: map[string]bool{}, actors: map[string]*actor{},
		claimTxns:   &txnBatcher{cli: c.cli, ctx: ctx, timeout: s.ttl / 2},
		releaseTxns: &txnBatcher{cli: c.cli, ctx: s.riskCtx, timeout: s.ttl / 2},
	}
	w.releases = &releaseWatch{w: w, waiters: map[string]*releaseWaiter{}}
	return w
}

func (a *actor) poke() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// run follows the target and spec watches until the epoch ends, then waits
// for every actor.
func (w *worker) run() {
	defer w.actorsWG.Wait()
	delay := retryMin
	reload := false
	for w.ctx.Err() == nil {
		rev, err := w.load(reload)
		if err != nil {
			w.c.log.Warn("loading target failed, retrying", "error", err)
			if !sleepCtx(w.ctx, delay) {
				return
			}
			delay = min(2*delay, retryMax)
			continue
		}
		delay = retryMin
		w.follow(rev)
		reload = true
	}
}

// load reads targets/<self> (and, after a watch broke, the specs of every
// sync with an actor, since the gap may have hidden changes) and applies
// them; it returns the revision read at.
func (w *worker) load(specs bool) (int64, error) {
	var ids []string
	if specs {
		w.mu.Lock()
		for id := range w.actors {
			ids = append(ids, id)
		}
		w.mu.Unlock()
	}
	// Specs in Txns of at most 127 reads, then the target last, so the
	// revision returned covers everything read.
	for start := 0; start < len(ids); start += 127 {
		batch := ids[start:min(start+127, len(ids))]
		ops := make([]clientv3.Op, len(batch))
		for i, id := range batch {
			ops[i] = clientv3.OpGet(w.c.keys.Sync(id))
		}
		resp, err := w.c.cli.Txn(w.ctx).Then(ops...).Commit()
		if err != nil {
			w.c.m.etcdError("load-specs")
			return 0, err
		}
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 1 {
				w.applySpec(kvs[0], false)
			} else {
				w.applySpec(&mvccpb.KeyValue{Key: []byte(w.c.keys.Sync(batch[i]))}, true)
			}
		}
	}
	self := w.c.o.memberID
	resp, err := w.c.cli.Txn(w.ctx).Then(
		clientv3.OpGet(w.c.keys.Target(self)),
		clientv3.OpGet(w.c.keys.TargetParts(self), clientv3.WithPrefix()),
		clientv3.OpGet(w.c.keys.Member(self)),
	).Commit()
	if err != nil {
		w.c.m.etcdError("load-target")
		return 0, err
	}
	if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) == 1 {
		w.applyMember(kvs[0])
	}
	var t memberTarget
	t.read(w.c.keys, self, resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs)
	if ids, ok := t.next(w.c.log); ok {
		w.applyTarget(ids)
	}
	return resp.Header.Revision, nil
}

// follow watches the target and the specs from rev+1 until a watch breaks
// (compaction, lost etcd leader, closed channel) or the epoch ends.
func (w *worker) follow(rev int64) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.ctx))
	defer cancel()
	self := w.c.o.memberID
	// The target's keys as load read them at rev (it applied them), so
	// that events on single keys can be put together into whole targets.
	var t memberTarget
	if err := t.readAt(ctx, w.c.cli, w.c.keys, self, rev); err != nil {
		w.watchBroke("target", clientv3.WatchResponse{}, false)
		return
	}
	tch := w.c.cli.Watch(ctx, w.c.keys.Target(self), clientv3.WithRev(rev+1))
	pch := w.c.cli.Watch(ctx, w.c.keys.TargetParts(self), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	mch := w.c.cli.Watch(ctx, w.c.keys.Member(self), clientv3.WithRev(rev+1))
	sch := w.c.cli.Watch(ctx, w.c.keys.Syncs(), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	for {
		select {
		case <-w.ctx.Done():
			return
		case wr, ok := <-tch:
			if !ok || wr.Err() != nil {
				w.watchBroke("target", wr, ok)
				return
			}
			t.events(w.c.keys, wr.Events)
			if ids, ok := t.next(w.c.log); ok {
				w.applyTarget(ids)
			}
		case wr, ok := <-pch:
			if !ok || wr.Err() != nil {
				w.watchBroke("target parts", wr, ok)
				return
			}
			t.events(w.c.keys, wr.Events)
			if ids, ok := t.next(w.c.log); ok {
				w.applyTarget(ids)
			}
		case wr, ok := <-mch:
			if !ok || wr.Err() != nil {
				w.watchBroke("member", wr, ok)
				return
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.PUT {
					w.applyMember(ev.Kv)
				}
			}
		case wr, ok := <-sch:
			if !ok || wr.Err() != nil {
				w.watchBroke("syncs", wr, ok)
				return
			}
			for _, ev := range wr.Events {
				w.applySpec(ev.Kv, ev.Type == mvccpb.DELETE)
			}
		}
	}
}

func (w *worker) watchBroke(what string, wr clientv3.WatchResponse, ok bool) {
	if w.ctx.Err() != nil {
		return
	}
	var err error = fmt.Errorf("channel closed")
	if ok {
		err = wr.Err()
	}
	w.c.log.Info("watch interrupted, reloading", "watch", what, "error", err)
}

// applyMember adopts a drain set on this member's key from outside (by an
// operator's tool): revokes then say Draining, and the member stays
// draining when it registers again after a lost session.
func (w *worker) applyMember(kv *mvccpb.KeyValue) {
	m, err := decodeMember(w.c.o.memberID, kv.Value)
	if err != nil || !m.Draining || w.c.isDraining() {
		return
	}
	w.c.mu.Lock()
	w.c.draining = true
	w.c.mu.Unlock()
	w.c.log.Info("draining, as asked through the member key")
}

// applySpec records a spec event for a sync this member has an actor for;
// other syncs' events are dropped at once, so memory follows what is owned.
func (w *worker) applySpec(kv *mvccpb.KeyValue, deleted bool) {
	id, ok := keys.ID(w.c.keys.Syncs(), string(kv.Key))
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	a := w.actors[id]
	if a == nil {
		delete(w.gone, id)
		if !deleted && w.target[id] && !w.leaving {
			// A targeted sync whose spec was unreadable (or that was
			// re-created) can run again.
			w.spawnLocked(id, nil)
		}
		return
	}
	if deleted {
		w.gone[id] = true
	} else if sy, err := decodeSync(id, kv.Value, kv.ModRevision); err != nil {
		w.c.log.Error("owned sync has an invalid spec; revoking it", "sync", id, "error", err)
		w.gone[id] = true
	} else {
		delete(w.gone, id)
		if a.spec == nil || sy.Revision > a.spec.Revision {
			a.spec = &sy
			a.poke()
		}
	}
	w.updateWantLocked(a)
}

// applyTarget makes ids the member's target.
func (w *worker) applyTarget(ids []string) {
	next := make(map[string]bool, len(ids))
	for _, id := range ids {
		next[id] = true
	}
	w.mu.Lock()
	w.loaded = true
	w.target = next
	var added []string
	for id := range next {
		if w.actors[id] == nil {
			added = append(added, id)
		}
	}
	for _, a := range w.actors {
		w.updateWantLocked(a)
	}
	w.mu.Unlock()
	w.c.notify()
	if len(added) == 0 {
		return
	}
	slices.Sort(added)
	// Claim the new syncs in batches before their actors start, so a cold
	// start costs a few Txns rather than one per sync.
	pre, err := w.claim(added)
	if err != nil {
		w.c.log.Warn("batched claim failed; each sync retries on its own", "syncs", len(added), "error", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range added {
		if w.actors[id] == nil && w.ctx.Err() == nil {
			w.spawnLocked(id, pre[id])
		}
	}
}

// spawnLocked starts the actor of sync id; pre is the result of a batched
// claim already made for it, if any.
func (w *worker) spawnLocked(id string, pre *claimResult) {
	a := &actor{id: id, kick: make(chan struct{}, 1), since: time.Now()}
	w.actors[id] = a
	w.updateWantLocked(a)
	w.actorsWG.Add(1)
	go w.runActor(a, pre)
}

// updateWantLocked recomputes whether a's sync should be owned here, and
// why not.
func (w *worker) updateWantLocked(a *actor) {
	want := w.target[a.id] && !w.gone[a.id] && !w.leaving
	if want == a.want {
		return
	}
	a.want = want
	if want {
		a.since = time.Now()
	} else {
		a.reason = w.reasonLocked(a.id)
	}
	a.poke()
}

func (w *worker) reasonLocked(id string) assignment.RevokeReason {
	switch {
	case w.leaving:
		return assignment.Leaving
	case w.gone[id]:
		return assignment.Removed
	case w.c.isDraining():
		return assignment.Draining
	}
	return assignment.Rebalanced
}

// leaveAll revokes everything with reason Leaving and stops claiming.
func (w *worker) leaveAll() {
	w.mu.Lock()
	w.leaving = true
	for _, a := range w.actors {
		w.updateWantLocked(a)
	}
	w.mu.Unlock()
}

// idle reports whether the target has been read, is empty, and nothing is
// owned or being revoked.
func (w *worker) idle() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.loaded && len(w.target) == 0 && len(w.actors) == 0
}

func (w *worker) actorCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.actors)
}

// runActor drives one sync: claim (or wait for the holder to release),
// assign, follow spec changes, revoke, release; again while it is wanted.
func (w *worker) runActor(a *actor, pre *claimResult) {
	defer w.actorsWG.Done()
	defer w.c.notify()
	backoff := failBackoffMin
	retry := retryMin
	var releasedAt time.Time
	for {
		w.mu.Lock()
		if !a.want || w.ctx.Err() != nil {
			delete(w.actors, a.id)
			w.mu.Unlock()
			if pre != nil && (pre.claimed || pre.mine) {
				w.releaseKey(a.id, pre.token)
			}
			return
		}
		since := a.since
		w.mu.Unlock()

		r := pre
		pre = nil
		if r == nil {
			rs, err := w.claim([]string{a.id})
			if err != nil {
				if !w.wait(a, retry) {
					continue
				}
				retry = min(2*retry, retryMax)
				continue
			}
			r = rs[a.id]
		}
		retry = retryMin
		switch {
		case (r.claimed || r.mine) && r.syncErr != nil:
			// Claimed a sync whose spec is unreadable (or that vanished):
			// never hand it to the handler; give it back and wait for the
			// leader to drop it from the target.
			w.releaseKey(a.id, r.token)
			w.markGone(a, r.syncErr)
		case r.claimed || r.mine:
			handoff := time.Duration(-1)
			if !releasedAt.IsZero() {
				handoff = time.Since(releasedAt)
			}
			w.c.m.claimed(time.Since(since), handoff)
			releasedAt = time.Time{}
			why := w.own(a, r)
			if why == assignment.LeaseLost || why == assignment.Shutdown {
				w.mu.Lock()
				delete(w.actors, a.id)
				w.mu.Unlock()
				return
			}
			if why == assignment.Failed {
				w.wait(a, backoff)
				backoff = min(2*backoff, failBackoffMax)
				w.mu.Lock()
				a.since = time.Now() // the retry's claim wait starts now
				w.mu.Unlock()
			} else {
				backoff = failBackoffMin
			}
		case r.syncErr != nil:
			w.markGone(a, r.syncErr)
		case r.holder != "":
			releasedAt = time.Time{}
			if next, released := w.waitRelease(a); next != nil {
				pre = next
				if released {
					releasedAt = time.Now()
				}
			}
		default:
			w.wait(a, retry)
		}
	}
}

// markGone records that the sync cannot be run here until its spec changes.
func (w *worker) markGone(a *actor, err error) {
	w.c.log.Warn("sync not runnable", "sync", a.id, "error", err)
	w.mu.Lock()
	w.gone[a.id] = true
	w.updateWantLocked(a)
	w.mu.Unlock()
}

// wait sleeps for d, returning early (false) when the actor is poked or the
// epoch ends.
func (w *worker) wait(a *actor, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.kick:
		return false
	case <-w.ctx.Done():
		return false
	}
}

// waitRelease waits for the holder of the sync's owner key to let go and
// claims it then. It returns the claim result (nil when something else
// needs a look: a poke, the end of the epoch) and whether a release was
// seen. The wait is on the worker's shared owners/ watch (releaseWatch),
// which starts at the current revision: the claim is tried again once it is
// in place, so no release can slip between the two.
func (w *worker) waitRelease(a *actor) (*claimResult, bool) {
	wt := w.releases.add(a.id)
	defer w.releases.remove(a.id, wt)
	for {
		select {
		case <-wt.wake:
			released := w.releases.sawDelete(wt)
			rs, err := w.claim([]string{a.id})
			if err != nil {
				return nil, released
			}
			if r := rs[a.id]; r.holder == "" {
				return r, released
			}
		case <-a.kick:
			w.mu.Lock()
			want := a.want
			w.mu.Unlock()
			if !want {
				return nil, false
			}
		case <-w.ctx.Done():
			return nil, false
		}
	}
}

// own runs the claimed sync through the handler until ownership ends, and
// releases it unless the lease is at risk; it returns why ownership ended.
func (w *worker) own(a *actor, r *claimResult) assignment.RevokeReason {
	c, err := assignment.NewClaim(assignment.ClaimConfig{
		KV:            w.c.cli,
		OwnerKey:      w.c.keys.Owner(a.id),
		CheckpointKey: w.c.keys.Checkpoint(a.id),
		Member:        w.c.o.memberID,
		Token:         r.token,
		Deadline:      w.sess.Deadline,
		Sync:          r.sync,
	})
	if err != nil { // cannot happen: every field is set above
		panic(err)
	}
	w.mu.Lock()
	if a.spec == nil || a.spec.Revision < r.sync.Revision {
		a.spec = &r.sync
	}
	a.failure = nil
	w.mu.Unlock()
	log := w.c.log.With("sync", a.id, "token", c.Token())
	w.c.addOwned(c)
	why := w.hold(a, c, log)
	if why != assignment.LeaseLost && why != assignment.Shutdown {
		w.release(c)
	}
	w.c.removeOwned(c)
	log.Info("released", "reason", why.String())
	return why
}

// hold calls OnAssign, then waits for a reason to end ownership, handling
// spec changes on the way, and calls OnRevoke.
func (w *worker) hold(a *actor, c *assignment.Claim, log *slog.Logger) assignment.RevokeReason {
	for {
		octx, cancel := context.WithCancel(context.WithValue(w.sess.riskCtx, failKey{}, func(err error) {
			w.mu.Lock()
			a.failure = err
			w.mu.Unlock()
			a.poke()
		}))
		log.Info("assigned", "revision", c.Sync().Revision)
		if err := w.c.callAssign(octx, c); err != nil {
			cancel()
			log.Warn("OnAssign failed", "error", err)
			w.c.revoke(w.sess, c, assignment.Failed)
			return assignment.Failed
		}
		why, respec := w.ownedLoop(a, c, octx, log)
		cancel()
		switch why {
		case assignment.LeaseLost, assignment.Shutdown:
			w.c.revokeHard(c, why)
		default:
			w.c.revoke(w.sess, c, why)
		}
		if why != assignment.SpecChanged {
			return why
		}
		c.SetSync(respec)
	}
}

// ownedLoop waits while the sync is owned; it returns why ownership ends
// and, for SpecChanged, the new spec.
func (w *worker) ownedLoop(a *actor, c *assignment.Claim, octx context.Context, log *slog.Logger) (assignment.RevokeReason, assignment.Sync) {
	for {
		select {
		case <-w.sess.Lost():
			return w.lostReason(), assignment.Sync{}
		case <-w.ctx.Done():
			return w.lostReason(), assignment.Sync{}
		case <-a.kick:
		}
		w.mu.Lock()
		want, reason, failure, spec := a.want, a.reason, a.failure, a.spec
		a.failure = nil
		w.mu.Unlock()
		switch {
		case !want:
			return reason, assignment.Sync{}
		case failure != nil:
			log.Warn("sync failed", "error", failure)
			w.c.m.callbackError("run")
			return assignment.Failed, assignment.Sync{}
		case spec != nil && spec.Revision > c.Sync().Revision:
			if w.c.upd == nil {
				return assignment.SpecChanged, *spec
			}
			c.SetSync(*spec)
			log.Info("spec updated", "revision", spec.Revision)
			w.c.callUpdate(octx, c)
		}
	}
}

// lostReason is LeaseLost, or Shutdown when the coordinator is stopping
// for good (its client closed).
func (w *worker) lostReason() assignment.RevokeReason {
	if w.c.shuttingDown() || w.c.cli.Ctx().Err() != nil {
		return assignment.Shutdown
	}
	return assignment.LeaseLost
}

// releaseKey deletes an owner key of this session that never reached the
// handler; if that fails the lease frees it.
func (w *worker) releaseKey(id string, token int64) {
	if err := w.deleteOwner(id, token); err != nil {
		w.c.log.Warn("release of unrunnable sync failed; the lease will free it", "sync", id, "error", err)
	}
}

// sleepCtx sleeps for d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

package coordinator

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
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
// should own or still holds an owner key of.
//
// Locks: worker.mu, Coordinator.mu, releaseWatch.mu, txnBatcher.mu and
// session.mu are all leaves: no code takes one of them while it holds
// another, or calls anything that may (a callback, an etcd request, a
// blocking channel operation) while it holds one.
type worker struct {
	c    *Coordinator
	sess *session
	ctx  context.Context // ends with the session's epoch

	mu     sync.Mutex
	target map[string]bool // sync IDs in targets/<self>
	// gone holds the targeted syncs that cannot run here until their spec
	// changes: deleted, or unreadable as last seen. It never holds a sync
	// outside the target (applyTarget prunes it), and a reload re-reads
	// the spec of every sync in it, so a fix or a re-add missed while a
	// watch was broken is never missed for good.
	gone    map[string]bool
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
	// memberKick asks the worker to bring members/<self> up to date (a
	// Drain was called).
	memberKick chan struct{}
	// rechecks are the instants at which the worker looks for keys on its
	// lease once more (see reconcile), oldest first (worker.mu): each a TTL
	// after an actor gave back a claim whose outcome it never learned, since
	// etcd may still apply that claim after the delete that gave it back.
	// They outlive a reload. suspectKick wakes the worker for a new one.
	rechecks    []time.Time
	suspectKick chan struct{}
	// drainShown: the member key says draining, as this worker saw or
	// wrote it.
	drainShown atomic.Bool
	// memberPending: a member-key write failed and is to be tried again.
	memberPending atomic.Bool
	// targetKeys are the keys of targets/<self> (head and parts) as last
	// read and watched, put together into whole targets; only the
	// worker's goroutine uses them.
	targetKeys memberTarget
}

// actor runs one sync's lifecycle on its own goroutine, so that callbacks
// for one sync are serial and different syncs never wait for each other.
// An actor stays in worker.actors until it holds no owner key, so a sync
// never has two actors on one member: no key is adopted while its release
// is pending. Its fields are guarded by worker.mu.
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
		releaseTxns: &txnBatcher{cli: c.cli, ctx: s.atRisk, timeout: s.ttl / 2},
		memberKick:  make(chan struct{}, 1),
		suspectKick: make(chan struct{}, 1),
	}
	w.releases = &releaseWatch{w: w, waiters: map[string]*releaseWaiter{}}
	return w
}

func (a *actor) poke() { poke(a.kick) }

// poke sends on a channel of capacity 1 without blocking: a wake-up that
// is already pending covers this one.
func poke(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// run follows the target and spec watches until the epoch ends, then waits
// for every actor. A load that fails, or watches that break again soon
// after a reload, are retried with backoff rather than in a tight loop.
func (w *worker) run() {
	defer w.actorsWG.Wait()
	var delay time.Duration
	reload := false
	for w.ctx.Err() == nil {
		if delay > 0 && !sleepCtx(w.ctx, delay) {
			return
		}
		start := time.Now()
		rev, specRev, err := w.load(reload)
		switch {
		case errors.Is(err, errMemberIDTaken):
			w.memberTrouble(err)
			return
		case err != nil:
			w.c.log.Warn("loading target failed, retrying", "error", err, "retry_in", max(delay, retryMin))
		default:
			w.follow(rev, specRev)
			reload = true
		}
		if err == nil && time.Since(start) > retryMax {
			delay = 0 // the watches held a while: this break is news
		} else {
			delay = max(retryMin, min(2*delay, retryMax))
		}
	}
}

// load reads targets/<self> and members/<self> and applies them; after a
// watch broke (reload) it first re-reads the spec of every sync the member
// has an opinion on (those with an actor, and those marked gone), since
// the gap may have hidden changes, and gives every owner key on its lease
// that no actor holds to an actor (reconcile). It returns the revision the
// target was read at, and the revision from which spec changes may not
// have been seen (the first spec read's: later reads may be at later
// revisions, so the syncs watch starts there and replays what they saw).
func (w *worker) load(reload bool) (rev, specRev int64, err error) {
	if reload {
		if err := w.reconcile(); err != nil {
			return 0, 0, err
		}
		w.mu.Lock()
		ids := make([]string, 0, len(w.actors)+len(w.gone))
		for id := range w.actors {
			ids = append(ids, id)
		}
		for id := range w.gone {
			if w.actors[id] == nil {
				ids = append(ids, id)
			}
		}
		w.mu.Unlock()
		// Specs in Txns of at most 127 reads, before the target, so the
		// revision returned covers everything read.
		for start := 0; start < len(ids); start += 127 {
			batch := ids[start:min(start+127, len(ids))]
			ops := make([]clientv3.Op, len(batch))
			for i, id := range batch {
				ops[i] = clientv3.OpGet(w.c.keys.Sync(id))
			}
			resp, err := w.txn(ops...)
			if err != nil {
				w.c.m.etcdError("load-specs")
				return 0, 0, err
			}
			if specRev == 0 {
				specRev = resp.Header.Revision
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
	}
	self := w.c.o.memberID
	resp, err := w.txn(
		clientv3.OpGet(w.c.keys.Target(self)),
		clientv3.OpGet(w.c.keys.TargetParts(self), clientv3.WithPrefix()),
		clientv3.OpGet(w.c.keys.Member(self)),
	)
	if err != nil {
		w.c.m.etcdError("load-target")
		return 0, 0, err
	}
	var member *mvccpb.KeyValue
	if kvs := resp.Responses[2].GetResponseRange().Kvs; len(kvs) == 1 {
		member = kvs[0]
	}
	if err := w.keepMember(member); errors.Is(err, errMemberIDTaken) {
		return 0, 0, err
	} else if err != nil {
		w.memberTrouble(err) // follow tries again; the target applies meanwhile
	}
	// follow goes on from these keys: it puts the events on single keys
	// together into whole targets.
	w.targetKeys = memberTarget{}
	w.targetKeys.read(w.c.keys, self, resp.Responses[0].GetResponseRange().Kvs, resp.Responses[1].GetResponseRange().Kvs)
	if ids, ok := w.targetKeys.next(w.c.log); ok {
		w.applyTarget(ids)
	}
	if specRev == 0 {
		specRev = resp.Header.Revision
	}
	return resp.Header.Revision, specRev, nil
}

// txn runs a Txn of reads for the worker, bounded like a claim: one stuck on
// an unresponsive etcd member fails after TTL/2, and the worker tries again.
func (w *worker) txn(ops ...clientv3.Op) (*clientv3.TxnResponse, error) {
	ctx, cancel := context.WithTimeout(w.ctx, w.sess.ttl/2)
	defer cancel()
	return w.c.cli.Txn(ctx).Then(ops...).Commit()
}

// follow watches the target and the member key from rev+1 and the specs
// from specRev+1 until a watch breaks (compaction, lost etcd leader, closed
// channel), the member key cannot be kept, or the epoch ends. A spec event
// replayed from before rev is newer than the read it follows, so applying
// it is right.
func (w *worker) follow(rev, specRev int64) {
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(w.ctx))
	defer cancel()
	self := w.c.o.memberID
	tch := w.c.cli.Watch(ctx, w.c.keys.Target(self), clientv3.WithRev(rev+1))
	pch := w.c.cli.Watch(ctx, w.c.keys.TargetParts(self), clientv3.WithPrefix(), clientv3.WithRev(rev+1))
	mch := w.c.cli.Watch(ctx, w.c.keys.Member(self), clientv3.WithRev(rev+1))
	sch := w.c.cli.Watch(ctx, w.c.keys.Syncs(), clientv3.WithPrefix(), clientv3.WithRev(specRev+1))
	recheck := time.NewTimer(time.Hour)
	defer recheck.Stop()
	w.armRecheck(recheck)
	// A member-key write that failed is tried again after a backoff; the
	// target and specs are followed meanwhile.
	memberRetry := time.NewTimer(time.Hour)
	memberRetry.Stop()
	defer memberRetry.Stop()
	memberDelay := retryMin
	keepMember := func(kv *mvccpb.KeyValue) bool {
		err := w.keepMember(kv)
		switch {
		case err == nil:
			memberDelay = retryMin
		case errors.Is(err, errMemberIDTaken):
			w.memberTrouble(err)
			return false
		default:
			w.memberTrouble(err)
			memberRetry.Reset(memberDelay)
			memberDelay = min(2*memberDelay, retryMax)
		}
		return true
	}
	if w.memberPending.Load() {
		memberRetry.Reset(0)
	}
	for {
		select {
		case <-w.ctx.Done():
			return
		case <-w.suspectKick:
			w.armRecheck(recheck)
		case <-recheck.C:
			if err := w.reconcile(); err != nil {
				w.c.log.Info("looking for owner keys on the lease failed, reloading", "error", err)
				return
			}
			w.armRecheck(recheck)
		case <-memberRetry.C:
			if !keepMember(nil) {
				return
			}
		case <-w.memberKick:
			if !keepMember(nil) {
				return
			}
		case wr, ok := <-tch:
			if !ok || wr.Err() != nil {
				w.watchBroke("target", wr, ok)
				return
			}
			w.targetKeys.events(w.c.keys, wr.Events)
			if ids, ok := w.targetKeys.next(w.c.log); ok {
				w.applyTarget(ids)
			}
		case wr, ok := <-pch:
			if !ok || wr.Err() != nil {
				w.watchBroke("target parts", wr, ok)
				return
			}
			w.targetKeys.events(w.c.keys, wr.Events)
			if ids, ok := w.targetKeys.next(w.c.log); ok {
				w.applyTarget(ids)
			}
		case wr, ok := <-mch:
			if !ok || wr.Err() != nil {
				w.watchBroke("member", wr, ok)
				return
			}
			for _, ev := range wr.Events {
				kv := ev.Kv
				if ev.Type == mvccpb.DELETE {
					kv = nil
				}
				if !keepMember(kv) {
					return
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

// memberTrouble ends the session when another one holds the member ID;
// any other error is logged, and the write is tried again (memberPending).
func (w *worker) memberTrouble(err error) {
	if errors.Is(err, errMemberIDTaken) {
		w.c.log.Error("member key taken by another session; starting a new session", "error", err)
		w.sess.markAtRisk(err)
		return
	}
	w.memberPending.Store(true)
	w.c.log.Warn("updating the member key failed, retrying", "error", err)
}

// armRecheck drops the rechecks that are due (the reconcile that just ran,
// or is about to, covers them) and sets t for the next one.
func (w *worker) armRecheck(t *time.Timer) {
	w.mu.Lock()
	now := time.Now()
	due := 0
	for due < len(w.rechecks) && !w.rechecks[due].After(now) {
		due++
	}
	w.rechecks = w.rechecks[due:]
	next := time.Hour
	if len(w.rechecks) > 0 {
		next = time.Until(w.rechecks[0])
	}
	w.mu.Unlock()
	t.Reset(next)
}

// suspect schedules a look for keys on the lease a TTL from now.
func (w *worker) suspect() {
	w.mu.Lock()
	w.rechecks = append(w.rechecks, time.Now().Add(w.sess.ttl))
	w.mu.Unlock()
	poke(w.suspectKick)
}

// errMemberIDTaken: members/<self> is held by another lease.
var errMemberIDTaken = errors.New("coordinator: member key held by another session")

// keepMember makes members/<self> say what this member is, given the key as
// last seen (nil: deleted, or to be read). It puts the key back on the
// session's lease if it was deleted (an operator's mistake: a member
// without a key gets no syncs, yet campaigns); it adopts a drain set from
// outside (Admin.Drain) and acknowledges it by writing the key itself,
// which Admin.Drain waits for; and it writes the drain that Drain asked
// for. It returns
// errMemberIDTaken when another lease holds the key.
func (w *worker) keepMember(kv *mvccpb.KeyValue) error {
	w.mu.Lock()
	leaving := w.leaving
	w.mu.Unlock()
	if leaving {
		return nil // Leave deletes the key: it must not come back
	}
	if kv != nil && kv.Lease != 0 {
		if clientv3.LeaseID(kv.Lease) != w.sess.id {
			return fmt.Errorf("%w: lease %x", errMemberIDTaken, kv.Lease)
		}
		m, err := decodeMember(w.c.o.memberID, kv.Value)
		if err == nil && m.Draining && !w.c.draining.Load() {
			w.c.draining.Store(true)
			// Acknowledge it: Admin.Drain waits for the member's own write.
			w.c.log.Info("draining, as asked through the member key")
		} else if err == nil && m.Draining == w.c.draining.Load() && !drainRequested(kv.Value) {
			w.memberPending.Store(false)
			w.showDrain(m.Draining)
			return nil
		}
	}
	key := w.c.keys.Member(w.c.o.memberID)
	draining := w.c.draining.Load()
	put := clientv3.OpPut(key, w.c.memberValue(draining), clientv3.WithLease(w.sess.id))
	// Overwrite the key only while it is ours; else only if it is absent
	// or has no lease (written by hand: no live session holds it). An
	// absent key's lease compares as 0.
	// Bounded like a claim: a Txn stuck on an unresponsive etcd member
	// must not hold the worker's watches up.
	ctx, cancel := context.WithTimeout(w.ctx, w.sess.ttl/2)
	defer cancel()
	resp, err := w.c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", w.sess.id)).
		Then(put).
		Else(clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(key), "=", 0)},
			[]clientv3.Op{put},
			[]clientv3.Op{clientv3.OpGet(key)})).Commit()
	if err != nil {
		w.c.m.etcdError("member")
		return fmt.Errorf("coordinator: write member key: %w", err)
	}
	if !resp.Succeeded {
		inner := resp.Responses[0].GetResponseTxn()
		if !inner.Succeeded {
			holder := int64(0)
			if kvs := inner.Responses[0].GetResponseRange().Kvs; len(kvs) == 1 {
				holder = kvs[0].Lease
			}
			return fmt.Errorf("%w: lease %x", errMemberIDTaken, holder)
		}
		w.c.log.Warn("member key was deleted or overwritten by hand; registered again")
	}
	w.memberPending.Store(false)
	w.showDrain(draining)
	return nil
}

// showDrain records whether the member key says draining, and wakes Drain.
func (w *worker) showDrain(draining bool) {
	if draining && !w.drainShown.Swap(true) {
		w.c.notify()
	}
}

// applySpec records a spec event: for a sync with an actor it updates the
// actor; for a targeted sync without one it keeps or clears the gone mark,
// and starts an actor once the spec can be run. Other syncs' events are
// dropped at once, so memory follows what is owned.
func (w *worker) applySpec(kv *mvccpb.KeyValue, deleted bool) {
	id, ok := keys.ID(w.c.keys.Syncs(), string(kv.Key))
	if !ok {
		return
	}
	var sy assignment.Sync
	var err error
	if deleted {
		err = fmt.Errorf("coordinator: sync %q was deleted", id)
	} else {
		sy, err = decodeSync(id, kv.Value, kv.ModRevision)
	}
	w.mu.Lock()
	a := w.actors[id]
	if (a == nil && !w.target[id]) || (a != nil && a.spec != nil && kv.ModRevision < a.spec.Revision) {
		// Not ours; or older than the spec the actor has (its claim read
		// the spec while the watch was behind): nothing new.
		w.mu.Unlock()
		return
	}
	if err != nil {
		if w.target[id] {
			w.gone[id] = true
		}
	} else {
		delete(w.gone, id)
		if a != nil && (a.spec == nil || sy.Revision > a.spec.Revision) {
			a.spec = &sy
			a.poke()
		}
	}
	switch {
	case a != nil:
		w.updateWantLocked(a)
	case err == nil && !w.leaving && w.ctx.Err() == nil:
		// A targeted sync whose spec was unreadable (or that was
		// re-created) can run again.
		w.spawnLocked(id, nil)
	}
	w.mu.Unlock()
	if a != nil && err != nil && !deleted {
		w.c.log.Error("owned sync has an invalid spec; revoking it", "sync", id, "error", err)
	}
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
	for id := range w.gone {
		if !next[id] {
			delete(w.gone, id)
		}
	}
	var added []string
	for id := range next {
		if w.actors[id] == nil && !w.gone[id] {
			added = append(added, id)
		}
	}
	for _, a := range w.actors {
		w.updateWantLocked(a)
	}
	leaving := w.leaving
	w.mu.Unlock()
	w.c.notify()
	if len(added) == 0 || leaving {
		return
	}
	slices.Sort(added)
	// Claim the new syncs in batches before their actors start, so a cold
	// start costs a few Txns rather than one per sync.
	pre, err := w.claim(added)
	if err != nil {
		w.c.log.Warn("batched claim failed; each sync retries on its own", "syncs", len(added), "error", err)
		// Any of them may have gone through: each actor finds out (it
		// adopts the key, or gives it back).
		pre = make(map[string]*claimResult, len(added))
		for _, id := range added {
			pre[id] = &claimResult{unknown: true}
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, id := range added {
		if w.actors[id] == nil {
			w.spawnLocked(id, pre[id])
		}
	}
}

// spawnLocked starts the actor of sync id; pre is the result of a claim
// already made for it, if any.
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
	if testHooks.revokeReason != nil {
		testHooks.revokeReason(id)
	}
	switch {
	case w.leaving:
		return assignment.Leaving
	case w.gone[id]:
		return assignment.Removed
	case w.c.draining.Load():
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
// held is a claim the actor may hold the owner key of: it is given back
// before the actor leaves the worker's map, never after.
func (w *worker) runActor(a *actor, held *claimResult) {
	defer w.actorsWG.Done()
	defer w.c.notify()
	stop := w.c.enterCallbackGoroutine()
	defer stop()
	if testHooks.actorStart != nil {
		testHooks.actorStart(a.id)
	}
	backoff := failBackoffMin
	retry := retryMin
	var releasedAt time.Time
	for {
		w.mu.Lock()
		want := a.want && w.ctx.Err() == nil && !w.sess.isAtRisk()
		if !want && !held.mayHold() {
			delete(w.actors, a.id)
			w.mu.Unlock()
			return
		}
		since := a.since
		w.mu.Unlock()
		if !want {
			if testHooks.giveBack != nil {
				testHooks.giveBack(a.id)
			}
			w.giveBack(a.id, held)
			held = nil
			continue // the sync may be wanted again meanwhile
		}

		r := held
		held = nil
		// A result that found the spec unreadable is not acted on twice:
		// the spec may have been fixed since (markGone refused to act on
		// it), and a new claim reads it again.
		if r == nil || r.unknown || r.syncErr != nil {
			rs, err := w.claim([]string{a.id})
			if err != nil {
				held = &claimResult{unknown: true} // it may have gone through
				if w.wait(a, retry) {
					retry = min(2*retry, retryMax)
				}
				continue
			}
			r = rs[a.id]
		}
		retry = retryMin
		switch {
		case r.held && r.syncErr != nil:
			// Claimed a sync whose spec is unreadable (or that vanished):
			// never hand it to the handler; give it back and wait for the
			// leader to drop it from the target.
			held = r
			w.markGone(a, r)
		case r.held:
			handoff := time.Duration(-1)
			if !releasedAt.IsZero() {
				handoff = time.Since(releasedAt)
			}
			w.c.m.claimed(time.Since(since), handoff)
			releasedAt = time.Time{}
			why, released := w.own(a, r)
			if !released {
				// The lease is at risk or gone, and the key with it.
				w.mu.Lock()
				delete(w.actors, a.id)
				w.mu.Unlock()
				return
			}
			switch why {
			case assignment.LeaseLost, assignment.Shutdown:
				// Not assigned: the lease came at risk. Either the
				// session ends very soon, or a renewal answered late and
				// it lives on; do not spin meanwhile.
				sleepCtx(w.sess.atRisk, retryMin)
			case assignment.Failed:
				w.wait(a, backoff)
				backoff = min(2*backoff, failBackoffMax)
				w.mu.Lock()
				a.since = time.Now() // the retry's claim wait starts now
				w.mu.Unlock()
			default:
				backoff = failBackoffMin
			}
		case r.syncErr != nil:
			w.markGone(a, r)
		case r.taken:
			releasedAt = time.Time{}
			next, released, err := w.waitRelease(a)
			switch {
			case err != nil:
				held = &claimResult{unknown: true}
			case next != nil:
				held = next
				if released {
					releasedAt = time.Now()
				}
			}
		default:
			w.wait(a, retry)
		}
	}
}

// markGone records that the sync cannot be run here until its spec
// changes, as the claim r found it; unless the syncs watch has shown a
// valid spec newer than r's read meanwhile (r is stale: the actor claims
// again and reads the spec anew).
func (w *worker) markGone(a *actor, r *claimResult) {
	w.mu.Lock()
	if a.spec != nil && a.spec.Revision > r.specRev {
		w.mu.Unlock()
		return
	}
	if w.target[a.id] {
		w.gone[a.id] = true
	}
	w.updateWantLocked(a)
	w.mu.Unlock()
	w.c.log.Warn("sync not runnable", "sync", a.id, "error", r.syncErr)
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
// needs a look: a poke, the end of the epoch), whether a release was seen,
// and the error of a claim whose outcome is unknown. The wait is on the
// worker's shared owners/ watch (releaseWatch), which starts at the current
// revision: the claim is tried again once it is in place, so no release can
// slip between the two.
func (w *worker) waitRelease(a *actor) (*claimResult, bool, error) {
	wt := w.releases.add(a.id)
	defer w.releases.remove(a.id, wt)
	for {
		select {
		case <-wt.wake:
			released := w.releases.sawDelete(wt)
			rs, err := w.claim([]string{a.id})
			if err != nil {
				return nil, released, err
			}
			if r := rs[a.id]; !r.taken {
				return r, released, nil
			}
		case <-a.kick:
			w.mu.Lock()
			want := a.want
			w.mu.Unlock()
			if !want {
				return nil, false, nil
			}
		case <-w.ctx.Done():
			return nil, false, nil
		}
	}
}

// own runs the claimed sync through the handler until ownership ends, and
// gives the owner key back. It returns why ownership ended and whether the
// key is gone: it is not when the lease is at risk or gone, or the client
// closed (the lease then takes the key with it).
func (w *worker) own(a *actor, r *claimResult) (assignment.RevokeReason, bool) {
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
	if testHooks.beforeAssign != nil {
		testHooks.beforeAssign(a.id, w.sess.AtRisk())
	}
	if !w.mayAssign() {
		return w.lostReason(), w.giveBack(a.id, r)
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
	// Forgotten before the key is deleted, so that Owned never lists a
	// claim whose owner key is gone: it lists a claim from the owner key's
	// write until OnRevoke has returned.
	w.c.removeOwned(c)
	// Given back in every case: after a lease-lost revoke the attempt
	// ends at once (the lease is abandoned and takes the key with it).
	released := w.giveBack(a.id, r)
	log.Info("released", "reason", why.String())
	return why, released
}

// mayAssign reports whether OnAssign may start: not once the lease is at
// risk (deadline - RevokeTimeout), when the member could no longer be sure
// to stop the work by its deadline.
func (w *worker) mayAssign() bool {
	return !w.sess.isAtRisk() && time.Now().Before(w.sess.atRiskAt())
}

// hold calls OnAssign, then waits for a reason to end ownership, handling
// spec changes on the way, and calls OnRevoke.
func (w *worker) hold(a *actor, c *assignment.Claim, log *slog.Logger) assignment.RevokeReason {
	for {
		octx, cancel := context.WithCancel(context.WithValue(w.sess.atRisk, failKey{}, func(err error) {
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
		if testHooks.beforeAssign != nil {
			testHooks.beforeAssign(a.id, w.sess.AtRisk())
		}
		if !w.mayAssign() {
			return w.lostReason()
		}
	}
}

// ownedLoop waits while the sync is owned; it returns why ownership ends
// and, for SpecChanged, the new spec. Only a change of the spec itself
// reaches the handler: a Put of the same spec, or of a new weight or new
// labels only (the leader's business: they may move the sync, which then
// comes as a revoke), updates the claim's Sync silently.
func (w *worker) ownedLoop(a *actor, c *assignment.Claim, octx context.Context, log *slog.Logger) (assignment.RevokeReason, assignment.Sync) {
	for {
		select {
		case <-w.sess.AtRisk():
			return w.lostReason(), assignment.Sync{}
		case <-w.ctx.Done():
			return w.lostReason(), assignment.Sync{}
		case <-a.kick:
		}
		// select picks at random among ready cases: a kick that came with
		// the lease at risk must not win over it.
		if w.sess.isAtRisk() || w.ctx.Err() != nil {
			return w.lostReason(), assignment.Sync{}
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
			if bytes.Equal(spec.Spec, c.Sync().Spec) {
				c.SetSync(*spec)
				continue
			}
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
	if w.c.clientClosed() {
		return assignment.Shutdown
	}
	return assignment.LeaseLost
}

// giveBack deletes the owner key an actor holds, or may hold (a claim
// whose outcome it never learned), and reports whether it is gone. It
// retries until the delete goes through; it gives up only when the
// session is at risk or the client closed, since then the lease is
// abandoned and takes the key with it. A key held for sure is deleted only
// with its token; a key that may be held, only while it is on this
// session's lease, which no other actor of this sync can hold meanwhile
// (an actor leaves the worker's map only after this).
func (w *worker) giveBack(id string, r *claimResult) bool {
	delay := retryMin
	for {
		err := w.deleteOwner(id, r)
		if err == nil {
			if r.unknown {
				w.suspect() // etcd may still apply the claim after this delete
			}
			return true
		}
		if w.sess.isAtRisk() || w.c.clientClosed() {
			return false
		}
		w.c.m.etcdError("release")
		w.c.log.Warn("release failed, retrying", "sync", id, "token", r.token, "error", err)
		if !sleepCtx(w.sess.atRisk, delay) {
			return false
		}
		delay = min(2*delay, retryMax)
	}
}

// reconcile gives every owner key on this session's lease that no actor
// holds to a new actor, which adopts it if the sync is targeted here and
// gives it back otherwise. Such a key is left by a claim that etcd applied
// although its answer was an error or never came (possibly after the
// actor had given it back), and nothing else would ever free it while the
// member lives: a member the sync moves to would wait for it for good.
func (w *worker) reconcile() error {
	ctx, cancel := context.WithTimeout(w.ctx, w.sess.ttl/2)
	defer cancel()
	resp, err := w.c.cli.TimeToLive(ctx, w.sess.id, clientv3.WithAttachedKeys())
	if err != nil {
		w.c.m.etcdError("lease-keys")
		return fmt.Errorf("coordinator: keys on the lease: %w", err)
	}
	var orphans []string
	w.mu.Lock()
	for _, k := range resp.Keys {
		id, ok := keys.ID(w.c.keys.Owners(), string(k))
		if !ok || w.actors[id] != nil {
			continue
		}
		orphans = append(orphans, id)
		w.spawnLocked(id, &claimResult{unknown: true})
	}
	w.mu.Unlock()
	if len(orphans) > 0 {
		w.c.m.orphans(len(orphans))
		w.c.log.Warn("owner keys on this member's lease with no sync running; adopting or releasing them", "syncs", orphans)
	}
	return nil
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

package coordinator

import (
	"context"
	"sync"

	"github.com/baton-go/baton/internal/wait"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/internal/keys"
)

// releaseWatch is one watch on the owners/ prefix, shared by every actor of
// the worker that waits for a holder to let go. clientv3 creates the
// watches of one stream one after another, each waiting for the server's
// reply, so a watch per sync queues N round trips when a rebalance moves N
// syncs to this member; one watch costs one. It runs only while an actor
// waits, so a member sees the group's owner changes only then.
type releaseWatch struct {
	w *worker

	// mu guards the fields below and releaseWaiter.deleted. A leaf (see
	// worker).
	mu      sync.Mutex
	waiters map[string]*releaseWaiter
	cancel  context.CancelFunc // of the running watch; nil when none runs
	created bool               // the running watch is in place
}

// releaseWaiter is one actor's registration: wake gets a value once the
// watch is in place (claim then: a release before it would be missed) and
// whenever the sync's owner key is deleted.
type releaseWaiter struct {
	wake    chan struct{}
	deleted bool // a delete was seen; guarded by releaseWatch.mu
}

func (r *releaseWaiter) poke() {
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// add registers the actor of sync id and starts the watch if none runs.
func (r *releaseWatch) add(id string) *releaseWaiter {
	r.mu.Lock()
	defer r.mu.Unlock()
	wt := &releaseWaiter{wake: make(chan struct{}, 1)}
	r.waiters[id] = wt
	switch {
	case r.cancel == nil:
		ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(r.w.ctx))
		r.cancel, r.created = cancel, false
		// The worker waits for this goroutine with its actors: it is
		// started by an actor, so the count is above zero.
		r.w.actorsWG.Add(1)
		go r.run(ctx)
	case r.created:
		wt.poke()
	}
	return wt
}

// remove unregisters the actor of sync id; the last one stops the watch.
func (r *releaseWatch) remove(id string, wt *releaseWaiter) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.waiters[id] == wt {
		delete(r.waiters, id)
	}
	if len(r.waiters) == 0 && r.cancel != nil {
		r.cancel()
		r.cancel, r.created = nil, false
	}
}

// sawDelete reports whether a delete of the sync's owner key woke wt.
func (r *releaseWatch) sawDelete(wt *releaseWaiter) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return wt.deleted
}

// run follows the owners/ prefix from the current revision (a watch from
// an older one would be delivered by etcd's slow unsynced loop) until ctx
// ends. When the watch breaks it starts again, and every waiter claims
// once more, which covers what the break may have hidden.
func (r *releaseWatch) run(ctx context.Context) {
	defer r.w.actorsWG.Done()
	prefix := r.w.c.keys.Owners()
	for ctx.Err() == nil {
		ch := r.w.c.cli.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		for wr := range ch {
			if wr.Err() != nil {
				break
			}
			r.mu.Lock()
			if ctx.Err() != nil {
				r.mu.Unlock()
				return
			}
			if wr.Created {
				r.created = true
				for _, wt := range r.waiters {
					wt.poke()
				}
			}
			for _, ev := range wr.Events {
				if ev.Type != mvccpb.DELETE {
					continue
				}
				if id, ok := keys.ID(prefix, string(ev.Kv.Key)); ok {
					if wt := r.waiters[id]; wt != nil {
						wt.deleted = true
						wt.poke()
					}
				}
			}
			r.mu.Unlock()
		}
		r.mu.Lock()
		if ctx.Err() == nil {
			r.created = false
		}
		r.mu.Unlock()
		wait.Sleep(ctx, retryMin)
	}
}

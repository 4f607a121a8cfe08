package election

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/baton-go/baton/internal/wait"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// cleanupTimeout bounds the deletion of a candidate key after a failed
// Campaign, so a Campaign returns promptly even when etcd is unreachable.
const cleanupTimeout = 2 * time.Second

// DefaultRequestTimeout bounds each etcd request a Campaign and a
// leadership make, unless [WithRequestTimeout] says otherwise.
const DefaultRequestTimeout = 5 * time.Second

// Retry delays of requests that failed for a reason other than the caller's
// context or the session ending (etcd leader change, lost connection).
const (
	retryMin = 10 * time.Millisecond
	retryMax = 500 * time.Millisecond
)

// Election is one candidate's view of an election: it campaigns with its
// session's lease and, once elected, tracks the leadership. Its methods are
// safe for concurrent use.
type Election struct {
	s       *concurrency.Session
	prefix  string        // keys are prefix + "/" + lease ID in hex, as in concurrency
	timeout time.Duration // of each request; a request that outlives it is retried

	mu    sync.Mutex
	camp  *campaign // the running Campaign, if any
	term  *term     // the last won leadership, if any
	stale bool      // a failed Campaign could not delete its key
}

type leaderKey struct {
	key string
	rev int64 // create revision
}

type campaign struct {
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when Campaign has returned
}

// term is one leadership: from a won Campaign until its context ends.
type term struct {
	leaderKey
	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when the term's goroutine has ended
}

// New returns a candidate in the election under key (a prefix: candidates'
// keys are key + "/" + lease ID, as [concurrency.NewElection] makes them),
// using s's lease. It does not touch etcd.
func New(s *concurrency.Session, key string, opts ...Option) *Election {
	e := &Election{s: s, prefix: key, timeout: DefaultRequestTimeout}
	for _, o := range opts {
		o(e)
	}
	return e
}

// Option configures an Election.
type Option func(*Election)

// WithRequestTimeout bounds each etcd request of a Campaign and of a
// leadership's watch (default [DefaultRequestTimeout]); one that gets no
// answer in time is retried. Without a bound, a request whose answer never
// comes would hold a Campaign for good, and with it every candidate in line
// behind its key.
func WithRequestTimeout(d time.Duration) Option {
	return func(e *Election) {
		if d > 0 {
			e.timeout = d
		}
	}
}

// request returns ctx bounded by the request timeout.
func (e *Election) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, e.timeout)
}

func (e *Election) candidateKey() string {
	return fmt.Sprintf("%s/%x", e.prefix, e.s.Lease())
}

// Campaign puts value as this candidate's and waits until it leads. It
// returns a leadership context once elected (see the package doc for when it
// ends), or an error when ctx ends (wrapping ctx's error), when the session
// ends ([ErrSessionDone]), when [Election.Resign] interrupts it
// ([ErrResigned]), or on an etcd error it cannot retry. Only one Campaign of
// an Election runs at a time; another returns [ErrAlreadyCampaigning], as
// does a Campaign while a won leadership has not ended.
//
// A Campaign after a leadership ended through ctx, with the key still in
// place, wins again at once with the same key and create revision.
func (e *Election) Campaign(ctx context.Context, value string) (context.Context, error) {
	cctx, cancel := context.WithCancelCause(ctx)
	c := &campaign{cancel: cancel, done: make(chan struct{})}
	defer close(c.done)
	defer cancel(nil)

	e.mu.Lock()
	if e.camp != nil || (e.term != nil && e.term.ctx.Err() == nil) {
		e.mu.Unlock()
		return nil, ErrAlreadyCampaigning
	}
	e.camp = c
	e.mu.Unlock()

	// The session ends the campaign too: waiting on etcd alone is how
	// concurrency.Election.Campaign can outlive its lease (etcd issue 19597).
	stop := context.AfterFunc(e.s.Ctx(), func() { cancel(ErrSessionDone) })
	defer stop()

	k, rev, err := e.campaign(cctx, value)
	if err == nil {
		e.mu.Lock()
		// Resign cancels cctx holding e.mu: either it did so before this
		// point, or it will find the term installed.
		if cctx.Err() == nil {
			lctx := e.startTerm(ctx, leaderKey{k, rev})
			e.camp = nil
			e.mu.Unlock()
			return lctx, nil
		}
		e.mu.Unlock()
		err = cctx.Err()
	}
	err = e.campaignError(cctx, err)
	// e.camp stays set while the key is deleted, so a Resign waits for it.
	e.dropCandidate(ctx)
	e.mu.Lock()
	e.camp = nil
	e.mu.Unlock()
	return nil, err
}

// startTerm begins a leadership of lk, derived from ctx (with e.mu held).
func (e *Election) startTerm(ctx context.Context, lk leaderKey) context.Context {
	t := &term{leaderKey: lk, done: make(chan struct{})}
	t.ctx, t.cancel = context.WithCancelCause(ctx)
	e.term = t
	e.stale = false
	stop := context.AfterFunc(e.s.Ctx(), func() { t.cancel(ErrSessionDone) })
	go func() {
		defer close(t.done)
		defer stop()
		e.watch(t)
	}()
	return t.ctx
}

// campaignError turns the reason a campaign stopped into Campaign's error.
func (e *Election) campaignError(cctx context.Context, err error) error {
	if cctx.Err() != nil {
		switch cause := context.Cause(cctx); {
		case errors.Is(cause, ErrSessionDone), errors.Is(cause, ErrResigned):
			return cause
		default:
			return fmt.Errorf("election: campaign: %w", cctx.Err())
		}
	}
	if errors.Is(err, ErrSessionDone) {
		return err
	}
	return fmt.Errorf("election: campaign: %w", err)
}

// dropCandidate deletes the candidate key of a failed Campaign. If that
// fails while the session lives, the key would keep its place in line: it
// is remembered for Resign, and a later Campaign adopts it.
func (e *Election) dropCandidate(ctx context.Context) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	// Once the session or the client is gone the lease takes the key with
	// it (or nobody can delete it anyway): do not wait out the timeout.
	defer context.AfterFunc(e.s.Ctx(), cancel)()
	defer context.AfterFunc(e.s.Client().Ctx(), cancel)()
	if err := e.deleteCandidate(dctx); err != nil && e.s.Ctx().Err() == nil {
		e.mu.Lock()
		e.stale = true
		e.mu.Unlock()
	}
}

// deleteCandidate deletes this session's candidate key. The key is named
// after the session's lease and carries it, so matching the lease finds it
// even when a Txn that created it failed on the client's side.
func (e *Election) deleteCandidate(ctx context.Context) error {
	k := e.candidateKey()
	_, err := e.s.Client().Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(k), "=", e.s.Lease())).
		Then(clientv3.OpDelete(k)).
		Commit()
	return err
}

// campaign writes the candidate key and waits until it is the oldest under
// the prefix. It returns the key and its create revision (0 if it never got
// one), and an error unless elected.
func (e *Election) campaign(ctx context.Context, value string) (string, int64, error) {
	cli := e.s.Client()
	k := e.candidateKey()
	var rev int64
	retry := wait.Backoff{Min: retryMin, Max: retryMax}
	for {
		if rev == 0 {
			var err error
			if rev, err = e.putCandidate(ctx, k, value); err != nil {
				if ctx.Err() != nil || errors.Is(err, ErrSessionDone) {
					return k, rev, err
				}
				if !retry.Wait(ctx) {
					return k, rev, ctx.Err()
				}
				continue
			}
		}

		// In one transaction: is the candidate key still ours, and which
		// older key, if any, is ahead of it?
		rctx, cancel := e.request(ctx)
		resp, err := cli.Txn(rctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", rev)).
			Then(clientv3.OpGet(e.prefix+"/", append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(rev-1))...)).
			Commit()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return k, rev, err
			}
			if !retry.Wait(ctx) {
				return k, rev, ctx.Err()
			}
			continue
		}
		retry.Reset()
		if !resp.Succeeded {
			// The key is gone: the lease expired (the session will report
			// it) or someone deleted it. Stand again.
			if e.s.Ctx().Err() != nil {
				return k, 0, ErrSessionDone
			}
			rev = 0
			continue
		}
		ahead := resp.Responses[0].GetResponseRange().Kvs
		if len(ahead) == 0 {
			return k, rev, nil
		}
		if err := wait.Deleted(ctx, cli, string(ahead[0].Key), resp.Header.Revision+1, nil); err != nil {
			return k, rev, err
		}
	}
}

// putCandidate creates the candidate key with the session's lease, or adopts
// it if it exists (a previous Campaign of this session), setting value.
func (e *Election) putCandidate(ctx context.Context, k, value string) (int64, error) {
	ctx, cancel := e.request(ctx)
	defer cancel()
	cli := e.s.Client()
	lease := e.s.Lease()
	resp, err := cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, value, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(k)).
		Commit()
	if err != nil {
		if isLeaseGone(err) {
			return 0, fmt.Errorf("%w: %w", ErrSessionDone, err)
		}
		return 0, err
	}
	if resp.Succeeded {
		return resp.Header.Revision, nil
	}
	kv := resp.Responses[0].GetResponseRange().Kvs[0]
	if string(kv.Value) != value {
		up, err := cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(k), "=", kv.CreateRevision)).
			Then(clientv3.OpPut(k, value, clientv3.WithLease(lease))).
			Commit()
		if err != nil {
			return 0, err
		}
		if !up.Succeeded {
			return 0, errors.New("candidate key changed while updating its value")
		}
	}
	return kv.CreateRevision, nil
}

// watch ends t when its key is deleted or replaced. It returns when t's
// context ends.
func (e *Election) watch(t *term) {
	cli := e.s.Client()
	retry := wait.Backoff{Min: retryMin, Max: retryMax}
	var rev int64 // 0: confirm the key with a Get first
	for t.ctx.Err() == nil {
		if rev == 0 {
			rctx, cancel := e.request(t.ctx)
			resp, err := cli.Get(rctx, t.key)
			cancel()
			if err != nil {
				retry.Wait(t.ctx)
				continue
			}
			retry.Reset()
			if len(resp.Kvs) == 0 || resp.Kvs[0].CreateRevision != t.rev {
				t.cancel(ErrLeaderKeyLost)
				return
			}
			rev = resp.Header.Revision + 1
		}
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(t.ctx))
		for wr := range cli.Watch(wctx, t.key, clientv3.WithRev(rev)) {
			if wr.Err() != nil {
				break
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete || ev.Kv.CreateRevision != t.rev {
					cancel()
					t.cancel(ErrLeaderKeyLost)
					return
				}
			}
		}
		cancel()
		// The watch broke: confirm the key again before watching on.
		rev = 0
		retry.Wait(t.ctx)
	}
}

// Resign ends the leadership, if any, and deletes the leader key through
// [concurrency.Election.Resign]; a running Campaign is interrupted (it
// returns [ErrResigned] and deletes its key). The leadership context is
// cancelled, with cause [ErrResigned], before Resign touches etcd, and its
// goroutine has ended when Resign returns. Resign without leadership is a
// no-op.
func (e *Election) Resign(ctx context.Context) error {
	e.mu.Lock()
	if c := e.camp; c != nil {
		c.cancel(ErrResigned)
		e.mu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return fmt.Errorf("election: resign: %w", ctx.Err())
		}
		e.mu.Lock()
	}
	t, stale := e.term, e.stale
	e.term, e.stale = nil, false
	e.mu.Unlock()

	if t == nil {
		if stale {
			if err := e.deleteCandidate(ctx); err != nil {
				return fmt.Errorf("election: resign: %w", err)
			}
		}
		return nil
	}
	t.cancel(ErrResigned)
	<-t.done
	ce := concurrency.ResumeElection(e.s, e.prefix+"/", t.key, t.rev)
	if err := ce.Resign(ctx); err != nil {
		if e.s.Ctx().Err() == nil {
			e.mu.Lock()
			e.stale = true // let a retried Resign delete it
			e.mu.Unlock()
		}
		return fmt.Errorf("election: resign: %w", err)
	}
	return nil
}

// Leader returns the value of the current leader (the candidate whose key was
// created first), or [ErrNoLeader].
func (e *Election) Leader(ctx context.Context) (string, error) {
	resp, err := concurrency.NewElection(e.s, e.prefix).Leader(ctx)
	if errors.Is(err, concurrency.ErrElectionNoLeader) {
		return "", ErrNoLeader
	}
	if err != nil {
		return "", fmt.Errorf("election: leader: %w", err)
	}
	return string(resp.Kvs[0].Value), nil
}

// Guard returns a comparison for leader-fenced writes: add it to a Txn's If
// and the Txn succeeds only while this Election's leader key exists with the
// create revision it won with. Without a current leadership (never won,
// ended, resigned) it returns a comparison that is always false.
func (e *Election) Guard() clientv3.Cmp {
	if lk, ok := e.current(); ok {
		return clientv3.Compare(clientv3.CreateRevision(lk.key), "=", lk.rev)
	}
	// No key has a negative create revision (a missing one has 0).
	return clientv3.Compare(clientv3.CreateRevision(e.prefix), "<", 0)
}

// Key returns the leader key while leading, else "".
func (e *Election) Key() string {
	lk, _ := e.current()
	return lk.key
}

// Rev returns the create revision of the leader key while leading, else 0.
// It grows with every new leadership, so it can serve as a fencing token.
func (e *Election) Rev() int64 {
	lk, _ := e.current()
	return lk.rev
}

func (e *Election) current() (leaderKey, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.term == nil || e.term.ctx.Err() != nil {
		return leaderKey{}, false
	}
	return e.term.leaderKey, true
}

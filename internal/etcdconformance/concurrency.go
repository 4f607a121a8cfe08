package etcdconformance

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

func concurrencyScenarios() []Scenario {
	return []Scenario{
		{Name: "election", Run: scenarioElection},
		{Name: "mutex", Run: scenarioMutex},
	}
}

// newSession makes a session closed when t ends and records its lease.
func newSession(t *testing.T, e Env, tr *Transcript, label string, opts ...concurrency.SessionOption) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(e.Client, opts...)
	must(t, err)
	t.Cleanup(func() { _ = s.Close() })
	tr.Logf("%s: lease %s", label, tr.Lease(s.Lease()))
	return s
}

// leaderValue formats an election's leader: value, create revision and
// lease; the key embeds the lease ID and is left out.
func leaderValue(tr *Transcript, resp *clientv3.GetResponse) string {
	if len(resp.Kvs) == 0 {
		return "none"
	}
	kv := resp.Kvs[0]
	return fmt.Sprintf("%q c%s %s", kv.Value, tr.Rev(kv.CreateRevision), tr.Lease(clientv3.LeaseID(kv.Lease)))
}

// async runs f in a goroutine and returns its error on a buffered channel.
func async(f func() error) <-chan error {
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	return errc
}

// await waits for an async result.
func await(t *testing.T, errc <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-errc:
		return err
	case <-time.After(opTimeout):
		t.Fatalf("%s did not return", what)
		return nil
	}
}

// pending fails t if errc already has a result.
func pending(t *testing.T, errc <-chan error, what string) {
	t.Helper()
	select {
	case err := <-errc:
		t.Fatalf("%s returned early: %v", what, err)
	default:
	}
}

// waitKeys waits until n keys exist under prefix: a waiting candidate or
// locker has written its key.
func waitKeys(t *testing.T, e Env, prefix string, n int64) {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d keys under %s", n, prefix), func() bool {
		resp, err := e.Client.Get(timeout(t), prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == n
	})
}

func scenarioElection(t *testing.T, e Env, tr *Transcript) {
	ctx := timeout(t)
	so := newSession(t, e, tr, "observer session")
	s1 := newSession(t, e, tr, "session 1")
	// Session 2's lease is revoked under it; a short TTL makes its
	// keepalive, and so Done, notice soon.
	s2 := newSession(t, e, tr, "session 2", concurrency.WithTTL(2))
	s3 := newSession(t, e, tr, "session 3")
	s4 := newSession(t, e, tr, "session 4")

	eo := concurrency.NewElection(so, "el/")
	_, err := eo.Leader(ctx)
	tr.Logf("leader of empty election: %s", tr.Err(err))
	expectErr(t, err, concurrency.ErrElectionNoLeader, "leader of an empty election")
	obsCtx, stopObserve := context.WithCancel(ctx)
	defer stopObserve()
	obs := eo.Observe(obsCtx)
	observed := func(want string) {
		t.Helper()
		select {
		case r, ok := <-obs:
			if !ok {
				t.Fatal("observe channel closed")
			}
			tr.Logf("observe: %s", leaderValue(tr, r))
			expect(t, len(r.Kvs) == 1 && string(r.Kvs[0].Value) == want, "observed leader %q", want)
		case <-time.After(opTimeout):
			t.Fatalf("observe: no leader %q", want)
		}
	}
	leader := func(el *concurrency.Election, want string) {
		t.Helper()
		r, err := el.Leader(ctx)
		if err != nil {
			tr.Logf("leader: %s", tr.Err(err))
			t.Errorf("leader: %v", err)
			return
		}
		tr.Logf("leader: %s", leaderValue(tr, r))
		expect(t, len(r.Kvs) == 1 && string(r.Kvs[0].Value) == want, "leader %q", want)
	}

	e1 := concurrency.NewElection(s1, "el/")
	must(t, e1.Campaign(ctx, "v1"))
	tr.Logf("candidate 1 elected: rev=%s", tr.Rev(e1.Rev()))
	observed("v1")
	leader(eo, "v1")

	e2 := concurrency.NewElection(s2, "el/")
	c2 := async(func() error { return e2.Campaign(ctx, "v2") })
	waitKeys(t, e, "el/", 2)
	pending(t, c2, "candidate 2's campaign")
	must(t, e1.Proclaim(ctx, "v1b"))
	observed("v1b")
	leader(e2, "v1b")
	must(t, e1.Resign(ctx))
	must(t, await(t, c2, "candidate 2's campaign"))
	tr.Logf("candidate 1 resigned, candidate 2 elected: rev=%s", tr.Rev(e2.Rev()))
	observed("v2")
	err = e1.Proclaim(ctx, "v1c")
	tr.Logf("proclaim by resigned candidate: %s", tr.Err(err))
	expectErr(t, err, concurrency.ErrElectionNotLeader, "proclaim by a resigned candidate")
	tr.Logf("resign again: %s", tr.Err(e1.Resign(ctx)))

	// Revoking a session's lease deletes its candidate key: the next
	// candidate wins and the session ends.
	e3 := concurrency.NewElection(s3, "el/")
	c3 := async(func() error { return e3.Campaign(ctx, "v3") })
	waitKeys(t, e, "el/", 2)
	pending(t, c3, "candidate 3's campaign")
	_, err = e.Client.Revoke(ctx, s2.Lease())
	must(t, err)
	must(t, await(t, c3, "candidate 3's campaign"))
	tr.Logf("session 2 revoked, candidate 3 elected: rev=%s", tr.Rev(e3.Rev()))
	observed("v3")
	select {
	case <-s2.Done():
		tr.Logf("session 2 done")
	case <-time.After(opTimeout):
		t.Fatal("session 2 not done after its lease was revoked")
	}
	tr.Logf("close revoked session 2: %s", tr.Err(s2.Close()))

	// Closing a session does the same.
	e4 := concurrency.NewElection(s4, "el/")
	c4 := async(func() error { return e4.Campaign(ctx, "v4") })
	waitKeys(t, e, "el/", 2)
	pending(t, c4, "candidate 4's campaign")
	tr.Logf("close session 3: %s", tr.Err(s3.Close()))
	must(t, await(t, c4, "candidate 4's campaign"))
	tr.Logf("session 3 closed, candidate 4 elected: rev=%s", tr.Rev(e4.Rev()))
	observed("v4")
	leader(eo, "v4")

	must(t, e4.Resign(ctx))
	_, err = eo.Leader(ctx)
	tr.Logf("leader after last resign: %s", tr.Err(err))
	expectErr(t, err, concurrency.ErrElectionNoLeader, "leader after the last resign")
	stopObserve()
	for range obs {
	}
	tr.Logf("observe closed after cancel")
}

func scenarioMutex(t *testing.T, e Env, tr *Transcript) {
	ctx := timeout(t)
	s1 := newSession(t, e, tr, "session 1")
	s2 := newSession(t, e, tr, "session 2")
	m1 := concurrency.NewMutex(s1, "lk/")
	m2 := concurrency.NewMutex(s2, "lk/")
	owns := func(label string, m *concurrency.Mutex) bool {
		t.Helper()
		resp, err := e.Client.Txn(ctx).If(m.IsOwner()).Commit()
		must(t, err)
		tr.Logf("%s owns the lock: %t", label, resp.Succeeded)
		return resp.Succeeded
	}

	must(t, m1.Lock(ctx))
	tr.Logf("m1 locked: rev=%s", tr.Rev(m1.Header().Revision))
	err := m2.TryLock(ctx)
	tr.Logf("m2 try lock: %s", tr.Err(err))
	expectErr(t, err, concurrency.ErrLocked, "try lock of a held lock")
	waitKeys(t, e, "lk/", 1)
	expect(t, owns("m1", m1), "m1 owns the lock")
	expect(t, !owns("m2", m2), "m2 does not own the lock")

	l2 := async(func() error { return m2.Lock(ctx) })
	waitKeys(t, e, "lk/", 2)
	pending(t, l2, "m2's lock")
	must(t, m1.Unlock(ctx))
	must(t, await(t, l2, "m2's lock"))
	tr.Logf("m1 unlocked, m2 locked: rev=%s", tr.Rev(m2.Header().Revision))
	expect(t, owns("m2", m2), "m2 owns the lock")
	err = m1.TryLock(ctx)
	tr.Logf("m1 try lock: %s", tr.Err(err))
	expectErr(t, err, concurrency.ErrLocked, "try lock of a held lock")

	// A Lock given up by its context removes its waiting key.
	lctx, cancel := context.WithCancel(ctx)
	l1 := async(func() error { return m1.Lock(lctx) })
	waitKeys(t, e, "lk/", 2)
	cancel()
	err = await(t, l1, "m1's canceled lock")
	tr.Logf("m1 lock canceled: %s", tr.Err(err))
	expect(t, err != nil, "a canceled lock fails")
	waitKeys(t, e, "lk/", 1)
	tr.Logf("m1's waiting key removed")

	must(t, m2.Unlock(ctx))
	must(t, m1.TryLock(ctx))
	tr.Logf("m1 try lock after m2 unlocked: rev=%s", tr.Rev(m1.Header().Revision))
	tr.Logf("close session 1: %s", tr.Err(s1.Close()))
	r := get(t, e, tr, "lock keys after session 1 closed", "lk/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	expect(t, r != nil && r.Count == 0, "no lock keys left")
}

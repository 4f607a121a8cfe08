package election_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/election"
	"github.com/baton-go/baton/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

const prefix = "/test/election"

// wait bounds every wait in these tests.
const wait = 10 * time.Second

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newSession starts a session with a 1s TTL, closed when t ends.
func newSession(t *testing.T, cli *clientv3.Client) *concurrency.Session {
	t.Helper()
	s, err := concurrency.NewSession(cli, concurrency.WithTTL(1))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// campaignAsync runs Campaign in a goroutine; the result arrives on the
// returned channel.
type result struct {
	ctx context.Context
	err error
}

func campaignAsync(ctx context.Context, e *election.Election, value string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		lctx, err := e.Campaign(ctx, value)
		ch <- result{lctx, err}
	}()
	return ch
}

func receive(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(wait):
		t.Fatal("campaign did not return")
		return result{}
	}
}

func requireDone(t *testing.T, ctx context.Context, cause error) {
	t.Helper()
	select {
	case <-ctx.Done():
	case <-time.After(wait):
		t.Fatal("leadership context not cancelled")
	}
	if cause != nil {
		require.ErrorIs(t, context.Cause(ctx), cause)
	}
}

func candidates(t *testing.T, cli *clientv3.Client) []string {
	t.Helper()
	resp, err := cli.Get(testCtx(t), prefix+"/", clientv3.WithPrefix())
	require.NoError(t, err)
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, string(kv.Value))
	}
	return out
}

func guardedPut(ctx context.Context, cli *clientv3.Client, e *election.Election) (bool, error) {
	resp, err := cli.Txn(ctx).If(e.Guard()).Then(clientv3.OpPut("/test/fenced", "x")).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

func TestSingleCandidateWins(t *testing.T) {
	c := etcdtest.NewCluster(t, 1)
	cli := c.Client(t)
	ctx := testCtx(t)
	e := election.New(newSession(t, cli), prefix)

	_, err := e.Leader(ctx)
	require.ErrorIs(t, err, election.ErrNoLeader)
	require.Empty(t, e.Key())

	lctx, err := e.Campaign(ctx, "a")
	require.NoError(t, err)
	require.NoError(t, lctx.Err())
	leader, err := e.Leader(ctx)
	require.NoError(t, err)
	require.Equal(t, "a", leader)
	require.NotEmpty(t, e.Key())
	require.Positive(t, e.Rev())

	ok, err := guardedPut(ctx, cli, e)
	require.NoError(t, err)
	require.True(t, ok)

	_, err = e.Campaign(ctx, "a")
	require.ErrorIs(t, err, election.ErrAlreadyCampaigning)

	require.NoError(t, e.Resign(ctx))
	requireDone(t, lctx, election.ErrResigned)
	_, err = e.Leader(ctx)
	require.ErrorIs(t, err, election.ErrNoLeader)
	require.NoError(t, e.Resign(ctx)) // no-op
	ok, err = guardedPut(ctx, cli, e)
	require.NoError(t, err)
	require.False(t, ok, "guard after resigning")
}

func TestSecondWaitsUntilFirstResigns(t *testing.T) {
	c := etcdtest.NewCluster(t, 1)
	ctx := testCtx(t)
	cli := c.Client(t)
	a := election.New(newSession(t, c.Client(t)), prefix)
	b := election.New(newSession(t, c.Client(t)), prefix)

	actx, err := a.Campaign(ctx, "a")
	require.NoError(t, err)
	bch := campaignAsync(ctx, b, "b")
	require.Eventually(t, func() bool { return len(candidates(t, cli)) == 2 }, wait, 10*time.Millisecond)
	select {
	case r := <-bch:
		t.Fatalf("b won while a leads: %v", r.err)
	default:
	}
	leader, err := b.Leader(ctx)
	require.NoError(t, err)
	require.Equal(t, "a", leader)

	require.NoError(t, a.Resign(ctx))
	requireDone(t, actx, election.ErrResigned)
	r := receive(t, bch)
	require.NoError(t, r.err)
	require.NoError(t, r.ctx.Err())
	leader, err = a.Leader(ctx)
	require.NoError(t, err)
	require.Equal(t, "b", leader)
	require.Greater(t, b.Rev(), int64(0))
	require.NoError(t, b.Resign(ctx))
}

func TestLeadershipEndsWhenLeaseRevoked(t *testing.T) {
	c := etcdtest.NewCluster(t, 1)
	ctx := testCtx(t)
	cli := c.Client(t)
	s := newSession(t, cli)
	e := election.New(s, prefix)
	lctx, err := e.Campaign(ctx, "a")
	require.NoError(t, err)

	_, err = cli.Revoke(ctx, s.Lease())
	require.NoError(t, err)
	requireDone(t, lctx, nil)
	cause := context.Cause(lctx)
	require.True(t, errors.Is(cause, election.ErrSessionDone) || errors.Is(cause, election.ErrLeaderKeyLost), "cause %v", cause)
	ok, err := guardedPut(ctx, cli, e)
	require.NoError(t, err)
	require.False(t, ok)

	// A new campaign on the dead session fails.
	select {
	case <-s.Done():
	case <-time.After(wait):
		t.Fatal("session not done after revoke")
	}
	_, err = e.Campaign(ctx, "a")
	require.ErrorIs(t, err, election.ErrSessionDone)
}

func TestLeadershipEndsWhenKeyDeleted(t *testing.T) {
	c := etcdtest.NewCluster(t, 1)
	ctx := testCtx(t)
	cli := c.Client(t)
	e := election.New(newSession(t, cli), prefix)
	lctx, err := e.Campaign(ctx, "a")
	require.NoError(t, err)
	key, rev := e.Key(), e.Rev()

	_, err = cli.Delete(ctx, key)
	require.NoError(t, err)
	requireDone(t, lctx, election.ErrLeaderKeyLost)
	require.Empty(t, e.Key())

	// The session lives on: campaigning again wins with a new key revision.
	lctx, err = e.Campaign(ctx, "a")
	require.NoError(t, err)
	require.Greater(t, e.Rev(), rev)
	require.NoError(t, e.Resign(ctx))
	requireDone(t, lctx, election.ErrResigned)
}

func TestLeadershipSurvivesValueUpdate(t *testing.T) {
	// A put on the leader key that keeps it (same lease, same create
	// revision) does not end the leadership; ending the caller's context
	// does, leaving the key, which a new Campaign wins back at once.
	c := etcdtest.NewCluster(t, 1)
	ctx := testCtx(t)
	cli := c.Client(t)
	s := newSession(t, cli)
	e := election.New(s, prefix)
	cctx, cancel := context.WithCancel(ctx)
	lctx, err := e.Campaign(cctx, "a")
	require.NoError(t, err)
	rev := e.Rev()
	_, err = cli.Put(ctx, e.Key(), "a2", clientv3.WithLease(s.Lease()))
	require.NoError(t, err)
	leader, err := e.Leader(ctx)
	require.NoError(t, err)
	require.Equal(t, "a2", leader)
	require.NoError(t, lctx.Err())

	cancel()
	requireDone(t, lctx, context.Canceled)
	ok, err := guardedPut(ctx, cli, e)
	require.NoError(t, err)
	require.False(t, ok, "guard once leadership ended locally")
	require.Equal(t, []string{"a2"}, candidates(t, cli))

	lctx, err = e.Campaign(ctx, "a3")
	require.NoError(t, err)
	require.Equal(t, rev, e.Rev())
	leader, err = e.Leader(ctx)
	require.NoError(t, err)
	require.Equal(t, "a3", leader)
	require.NoError(t, e.Resign(ctx))
	requireDone(t, lctx, election.ErrResigned)
}

func TestGuardFailsAfterLosingLeadership(t *testing.T) {
	c := etcdtest.NewCluster(t, 1)
	ctx := testCtx(t)
	cli := c.Client(t)
	sa := newSession(t, c.Client(t))
	a := election.New(sa, prefix)
	b := election.New(newSession(t, c.Client(t)), prefix)

	actx, err := a.Campaign(ctx, "a")
	require.NoError(t, err)
	stale := a.Guard() // what a zombie leader would still use
	ok, err := guardedPut(ctx, cli, a)
	require.NoError(t, err)
	require.True(t, ok)

	bch := campaignAsync(ctx, b, "b")
	_, err = cli.Revoke(ctx, sa.Lease())
	require.NoError(t, err)
	requireDone(t, actx, nil)
	r := receive(t, bch)
	require.NoError(t, r.err)

	resp, err := cli.Txn(ctx).If(stale).Then(clientv3.OpPut("/test/fenced", "zombie")).Commit()
	require.NoError(t, err)
	require.False(t, resp.Succeeded, "stale guard")
	ok, err = guardedPut(ctx, cli, a)
	require.NoError(t, err)
	require.False(t, ok, "guard of the old leader")
	ok, err = guardedPut(ctx, cli, b)
	require.NoError(t, err)
	require.True(t, ok, "guard of the new leader")
	require.NoError(t, b.Resign(ctx))
}

func TestCampaignReturnsWhenSessionClosed(t *testing.T) {
	c := etcdtest.NewCluster(t, 1)
	ctx := testCtx(t)
	cli := c.Client(t)
	a := election.New(newSession(t, c.Client(t)), prefix)
	sb := newSession(t, c.Client(t))
	b := election.New(sb, prefix)

	_, err := a.Campaign(ctx, "a")
	require.NoError(t, err)
	bch := campaignAsync(ctx, b, "b")
	require.Eventually(t, func() bool { return len(candidates(t, cli)) == 2 }, wait, 10*time.Millisecond)

	start := time.Now()
	require.NoError(t, sb.Close())
	r := receive(t, bch)
	require.ErrorIs(t, r.err, election.ErrSessionDone)
	require.Less(t, time.Since(start), 2*time.Second)
	require.Equal(t, []string{"a"}, candidates(t, cli), "no key of b left")
	require.NoError(t, a.Resign(ctx))
}

func TestCampaignOnLostLeaseFails(t *testing.T) {
	// etcd issue 19597: the candidate's lease disappears while it waits and
	// the leader ahead of it goes; it must not report a win.
	c := etcdtest.NewCluster(t, 1)
	ctx := testCtx(t)
	cli := c.Client(t)
	a := election.New(newSession(t, c.Client(t)), prefix)
	sb := newSession(t, c.Client(t))
	b := election.New(sb, prefix)

	_, err := a.Campaign(ctx, "a")
	require.NoError(t, err)
	bch := campaignAsync(ctx, b, "b")
	require.Eventually(t, func() bool { return len(candidates(t, cli)) == 2 }, wait, 10*time.Millisecond)
	_, err = cli.Revoke(ctx, sb.Lease())
	require.NoError(t, err)
	require.NoError(t, a.Resign(ctx))

	r := receive(t, bch)
	require.ErrorIs(t, r.err, election.ErrSessionDone)
	require.Empty(t, candidates(t, cli))
	_, err = b.Leader(ctx)
	require.ErrorIs(t, err, election.ErrNoLeader)
}

func TestCampaignCancelledRemovesKey(t *testing.T) {
	c := etcdtest.NewCluster(t, 1)
	ctx := testCtx(t)
	cli := c.Client(t)
	a := election.New(newSession(t, c.Client(t)), prefix)
	b := election.New(newSession(t, c.Client(t)), prefix)
	_, err := a.Campaign(ctx, "a")
	require.NoError(t, err)

	bctx, cancel := context.WithCancel(ctx)
	bch := campaignAsync(bctx, b, "b")
	require.Eventually(t, func() bool { return len(candidates(t, cli)) == 2 }, wait, 10*time.Millisecond)
	cancel()
	r := receive(t, bch)
	require.ErrorIs(t, r.err, context.Canceled)
	require.Equal(t, []string{"a"}, candidates(t, cli))

	// Resign interrupts a campaign the same way.
	bch = campaignAsync(ctx, b, "b")
	require.Eventually(t, func() bool { return len(candidates(t, cli)) == 2 }, wait, 10*time.Millisecond)
	require.NoError(t, b.Resign(ctx))
	r = receive(t, bch)
	require.ErrorIs(t, r.err, election.ErrResigned)
	require.Equal(t, []string{"a"}, candidates(t, cli))
	require.NoError(t, a.Resign(ctx))
}

func TestCampaignCutOffReturns(t *testing.T) {
	// A candidate cut off from etcd: its session ends after the TTL and its
	// Campaign returns soon after, although it cannot delete its key; the
	// lease takes the key away.
	c := etcdtest.NewCluster(t, 3)
	ctx := testCtx(t)
	cli := c.ClientTo(t, 1)
	a := election.New(newSession(t, c.ClientTo(t, 1)), prefix)
	b := election.New(newSession(t, c.ClientTo(t, 0)), prefix)
	_, err := a.Campaign(ctx, "a")
	require.NoError(t, err)
	bch := campaignAsync(ctx, b, "b")
	require.Eventually(t, func() bool { return len(candidates(t, cli)) == 2 }, wait, 10*time.Millisecond)

	c.Blackhole(0)
	r := receive(t, bch)
	require.ErrorIs(t, r.err, election.ErrSessionDone)
	require.Eventually(t, func() bool {
		got := candidates(t, cli)
		return len(got) == 1 && got[0] == "a"
	}, wait, 20*time.Millisecond)
	c.Unblackhole(0)
	require.NoError(t, a.Resign(ctx))
}

func TestLeadershipEndsWhenCutOff(t *testing.T) {
	c := etcdtest.NewCluster(t, 3)
	ctx := testCtx(t)
	a := election.New(newSession(t, c.ClientTo(t, 0)), prefix)
	b := election.New(newSession(t, c.ClientTo(t, 1)), prefix)
	actx, err := a.Campaign(ctx, "a")
	require.NoError(t, err)
	bch := campaignAsync(ctx, b, "b")

	c.Blackhole(0)
	requireDone(t, actx, election.ErrSessionDone)
	r := receive(t, bch)
	require.NoError(t, r.err)
	cli := c.ClientTo(t, 2)
	ok, err := guardedPut(ctx, cli, b)
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = guardedPut(ctx, cli, a)
	require.NoError(t, err)
	require.False(t, ok)
	c.Unblackhole(0)
	require.NoError(t, b.Resign(ctx))
}

func TestLeadershipSurvivesEtcdLeaderChange(t *testing.T) {
	// The leader key's watch requires an etcd leader: it breaks when the
	// etcd leader goes, and the election re-checks the key instead of giving
	// up leadership.
	c := etcdtest.NewCluster(t, 3)
	ctx := testCtx(t)
	lead := c.WaitLeader()
	other := (lead + 1) % 3
	cli := c.ClientTo(t, other)
	e := election.New(newSession(t, cli), prefix)
	lctx, err := e.Campaign(ctx, "a")
	require.NoError(t, err)

	c.Stop(lead)
	newLead := c.WaitLeader()
	require.NotEqual(t, lead, newLead)
	c.Restart(lead)
	c.WaitLeader()
	ok, err := guardedPut(ctx, cli, e)
	require.NoError(t, err)
	require.True(t, ok)
	require.NoError(t, lctx.Err(), "leadership ended by an etcd leader change")

	// The re-established watch still sees the key go.
	_, err = cli.Delete(ctx, e.Key())
	require.NoError(t, err)
	requireDone(t, lctx, election.ErrLeaderKeyLost)
}

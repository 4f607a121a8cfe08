package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/etcdtest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestClusterPutGet(t *testing.T) {
	c := etcdtest.NewCluster(t, 3)
	cli := c.Client(t)
	ctx := ctxFor(t, 10*time.Second)
	_, err := cli.Put(ctx, "k", "v")
	require.NoError(t, err)
	for i := range c.Size() {
		resp, err := c.ClientTo(t, i).Get(ctx, "k")
		require.NoError(t, err)
		require.Len(t, resp.Kvs, 1)
	}
	// A 1s lease is granted as asked.
	lease, err := cli.Grant(ctx, 1)
	require.NoError(t, err)
	require.EqualValues(t, 1, lease.TTL)
	require.NoError(t, cli.Close()) // closing early is harmless
}

func TestClusterBlackholeCutsOnlyPinnedClients(t *testing.T) {
	c := etcdtest.NewCluster(t, 3)
	cut := c.ClientTo(t, 0)
	other := c.ClientTo(t, 1)
	ctx := ctxFor(t, 20*time.Second)
	_, err := cut.Put(ctx, "k", "before")
	require.NoError(t, err)

	c.Blackhole(0)
	c.Blackhole(0) // harmless
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = cut.Put(short, "k", "during")
	cancel()
	require.Error(t, err)
	// The member still takes part in the cluster: writes through another
	// member succeed and reach it.
	_, err = other.Put(ctx, "k", "during-other")
	require.NoError(t, err)

	c.Unblackhole(0)
	require.Eventually(t, func() bool {
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := cut.Get(short, "k")
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "during-other"
	}, 15*time.Second, 20*time.Millisecond)
}

func TestClusterStopRestart(t *testing.T) {
	c := etcdtest.NewCluster(t, 3)
	lead := c.WaitLeader()
	c.Stop(lead)
	newLead := c.WaitLeader()
	require.NotEqual(t, lead, newLead)
	ctx := ctxFor(t, 20*time.Second)
	_, err := c.ClientTo(t, newLead).Put(ctx, "k", "v")
	require.NoError(t, err)
	c.Restart(lead)
	c.WaitLeader()
	require.Eventually(t, func() bool {
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := c.ClientTo(t, lead).Get(short, "k")
		return err == nil && len(resp.Kvs) == 1
	}, 15*time.Second, 20*time.Millisecond)
}

func TestClusterInSubtests(t *testing.T) {
	outer := etcdtest.NewCluster(t, 1)
	for _, name := range []string{"a", "b"} {
		t.Run(name, func(t *testing.T) {
			inner := etcdtest.NewCluster(t, 1)
			ctx := ctxFor(t, 10*time.Second)
			_, err := inner.Client(t).Put(ctx, "k", name)
			require.NoError(t, err)
			resp, err := outer.Client(t).Get(ctx, "k")
			require.NoError(t, err)
			require.Empty(t, resp.Kvs)
		})
	}
}

func TestEmbedded(t *testing.T) {
	eps := etcdtest.Embedded(t)
	cli := etcdtest.NewClient(t, eps)
	ctx := ctxFor(t, 10*time.Second)
	_, err := cli.Put(ctx, "k", "v")
	require.NoError(t, err)
	lease, err := cli.Grant(ctx, 1)
	require.NoError(t, err)
	require.EqualValues(t, 1, lease.TTL)
}

func TestClusterLeftBroken(t *testing.T) {
	// A test may end with a member blackholed, paused or stopped: cleanup
	// copes and leaks nothing.
	c := etcdtest.NewCluster(t, 3)
	ctx := ctxFor(t, 10*time.Second)
	for i := range c.Size() {
		_, err := c.ClientTo(t, i).Put(ctx, "k", "v")
		require.NoError(t, err)
	}
	c.Blackhole(0)
	c.PauseConnections(1)
	c.Stop(2)
	c.Partition(1)
	// A request stuck on the blackhole when the test ends fails once its
	// client is closed.
	done := make(chan error, 1)
	t.Cleanup(func() {
		select {
		case err := <-done:
			require.Error(t, err)
		case <-time.After(10 * time.Second):
			t.Error("request on a closed client still running")
		}
	})
	cli := c.ClientTo(t, 0)
	go func() {
		_, err := cli.Get(context.Background(), "k")
		done <- err
	}()
}

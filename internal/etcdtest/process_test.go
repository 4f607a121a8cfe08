package etcdtest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/baton-go/baton/internal/etcdtest"
)

func TestProcessClusterSurvivesLeaderKill(t *testing.T) {
	pc := etcdtest.StartProcessCluster(t, 3)
	cli := pc.Client(t)
	ctx := ctxFor(t, 60*time.Second)
	_, err := cli.Put(ctx, "k", "v1")
	require.NoError(t, err)
	resp, err := cli.Get(ctx, "k")
	require.NoError(t, err)
	require.Equal(t, "v1", string(resp.Kvs[0].Value))

	lead, err := pc.Leader(ctx)
	require.NoError(t, err)
	pc.Kill(lead)
	pc.Kill(lead) // harmless
	require.Zero(t, pc.PID(lead))

	require.Eventually(t, func() bool {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := cli.Put(attempt, "k", "v2")
		return err == nil
	}, 20*time.Second, 20*time.Millisecond)
	newLead, err := pc.Leader(ctx)
	require.NoError(t, err)
	require.NotEqual(t, lead, newLead)

	// The killed process comes back with its data and catches up.
	pc.Restart(lead)
	only := etcdtest.NewClient(t, []string{pc.Endpoint(lead)})
	require.Eventually(t, func() bool {
		attempt, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		resp, err := only.Get(attempt, "k")
		return err == nil && len(resp.Kvs) == 1 && string(resp.Kvs[0].Value) == "v2"
	}, 20*time.Second, 20*time.Millisecond)
}

func TestProcessClusterSingle(t *testing.T) {
	pc := etcdtest.StartProcessCluster(t, 1)
	ctx := ctxFor(t, 20*time.Second)
	cli := pc.Client(t)
	_, err := cli.Put(ctx, "k", "v")
	require.NoError(t, err)
	lease, err := cli.Grant(ctx, 1)
	require.NoError(t, err)
	require.EqualValues(t, 1, lease.TTL)
	require.NotZero(t, pc.PID(0))
}

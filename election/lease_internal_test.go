package election

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/internal/etcdtest"
)

func TestIsLeaseGone(t *testing.T) {
	c := etcdtest.NewCluster(t, 1)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 5)
	require.NoError(t, err)
	_, err = cli.Revoke(ctx, lease.ID)
	require.NoError(t, err)
	_, err = cli.Put(ctx, "k", "v", clientv3.WithLease(lease.ID))
	require.Error(t, err)
	require.True(t, isLeaseGone(err), "%v", err)
	require.False(t, isLeaseGone(errors.New("other")))
}

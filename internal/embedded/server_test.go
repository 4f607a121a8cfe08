package embedded_test

import (
	"bytes"
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/embedded"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestStartPutGetRestart(t *testing.T) {
	dir := t.TempDir()
	begin := time.Now()
	srv, err := embedded.Start(dir)
	require.NoError(t, err)
	t.Logf("started in %v at %v", time.Since(begin), srv.Endpoints())
	require.Less(t, time.Since(begin), 5*time.Second)

	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 2 * time.Second})
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = cli.Put(ctx, "k", "v")
	require.NoError(t, err)

	// A 1s lease must be granted as asked: the default election timeout is
	// short enough.
	lease, err := cli.Grant(ctx, 1)
	require.NoError(t, err)
	require.EqualValues(t, 1, lease.TTL)
	require.NoError(t, cli.Close())
	srv.Close()
	srv.Close() // harmless

	// The data survives a restart on the same directory.
	srv, err = embedded.Start(dir)
	require.NoError(t, err)
	defer srv.Close()
	cli, err = clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 2 * time.Second})
	require.NoError(t, err)
	defer cli.Close()
	resp, err := cli.Get(ctx, "k")
	require.NoError(t, err)
	require.Len(t, resp.Kvs, 1)
	require.Equal(t, "v", string(resp.Kvs[0].Value))
}

func TestStartBadDir(t *testing.T) {
	_, err := embedded.Start("")
	require.Error(t, err)
}

func TestLoggerGetsWarningsOnly(t *testing.T) {
	var buf bytes.Buffer
	l := slog.New(slog.NewTextHandler(&syncWriter{buf: &buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv, err := embedded.Start(t.TempDir(), embedded.WithLogger(l), embedded.WithUnsafeNoFsync())
	require.NoError(t, err)
	srv.Close()
	require.NotContains(t, buf.String(), "level=INFO")
}

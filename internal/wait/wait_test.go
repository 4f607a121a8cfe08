package wait_test

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/baton-go/baton/internal/etcdtest"
	"github.com/baton-go/baton/internal/wait"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
}

func TestSleepOrWake(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		start := time.Now()
		require.True(t, wait.Sleep(ctx, time.Second), "a sleep that runs out")
		require.Equal(t, time.Second, time.Since(start))

		wake := make(chan struct{}, 1)
		wake <- struct{}{}
		require.False(t, wait.SleepOrWake(ctx, time.Hour, wake), "a wake ends it at once")
		require.Empty(t, wake, "the wake was taken")

		time.AfterFunc(time.Minute, cancel)
		start = time.Now()
		require.False(t, wait.SleepOrWake(ctx, time.Hour, nil), "ctx ends it")
		require.Equal(t, time.Minute, time.Since(start))
		require.False(t, wait.Sleep(ctx, time.Second), "an ended ctx ends it at once")
	})
}

func TestBackoff(t *testing.T) {
	var waited []time.Duration
	b := wait.Backoff{Min: 10 * time.Millisecond, Max: 50 * time.Millisecond, OnWait: func(d time.Duration) { waited = append(waited, d) }}
	var got []time.Duration
	for range 5 {
		got = append(got, b.Next())
	}
	require.Equal(t, []time.Duration{10, 20, 40, 50, 50}, scale(got, time.Millisecond))
	b.Reset()
	require.Equal(t, 10*time.Millisecond, b.Next(), "Reset starts at Min again")

	synctest.Test(t, func(t *testing.T) {
		b := wait.Backoff{Min: time.Second, Max: 4 * time.Second, OnWait: func(d time.Duration) { waited = append(waited, d) }}
		start := time.Now()
		for range 4 {
			require.True(t, b.Wait(context.Background()))
		}
		require.Equal(t, (1+2+4+4)*time.Second, time.Since(start))
	})
	require.Equal(t, []time.Duration{1, 2, 4, 4}, scale(waited, time.Second), "OnWait sees each delay")
}

func scale(ds []time.Duration, unit time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d / unit
	}
	return out
}

// LoadAndFollow loads again after each follow, at once after progress,
// after a growing delay after failed loads and fruitless follows, and
// stops on ErrStop.
func TestLoadAndFollow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log []string
		start := time.Now()
		at := func(what string) { log = append(log, what+"@"+time.Since(start).String()) }
		loads := 0
		load := func() error {
			loads++
			at("load")
			switch loads {
			case 1, 2:
				return errors.New("etcd down")
			case 7:
				return errors.Join(wait.ErrStop, errors.New("member key taken"))
			}
			return nil
		}
		follows := 0
		follow := func() bool {
			follows++
			at("follow")
			if follows == 2 {
				time.Sleep(5 * time.Second) // held a while, no progress
			}
			return follows == 1 // the first delivered something
		}
		b := wait.Backoff{Min: time.Second, Max: 4 * time.Second}
		err := wait.LoadAndFollow(context.Background(), &b, load, follow)
		require.ErrorIs(t, err, wait.ErrStop)
		require.Equal(t, []string{
			"load@0s", "load@1s", "load@3s", // two failures: 1s, then 2s
			"follow@3s", "load@3s", // progress: at once
			"follow@3s", "load@8s", // held 5s ≥ Max: at once
			"follow@8s", "load@9s", // no progress, short: backoff from Min
			"follow@9s", "load@11s", // again: doubled
		}, log)
	})
}

func TestLoadAndFollowEndsWithItsCtx(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		b := wait.Backoff{Min: time.Second, Max: time.Second}
		err := wait.LoadAndFollow(ctx, &b, func() error { return errors.New("down") }, func() bool { return true })
		require.NoError(t, err)
		require.Equal(t, 10*time.Second, time.Since(start))
	})
}

func TestDeleted(t *testing.T) {
	cli := etcdtest.NewCluster(t, 1).Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Put(ctx, "k", "v")
	require.NoError(t, err)
	from := resp.Header.Revision + 1

	done := make(chan error, 1)
	go func() { done <- wait.Deleted(ctx, cli, "k", from, nil) }()
	_, err = cli.Put(ctx, "k", "v2") // a put is not a deletion
	require.NoError(t, err)
	_, err = cli.Delete(ctx, "k")
	require.NoError(t, err)
	require.NoError(t, <-done, "the deletion ends the wait")

	// A deletion before the call, at or after rev, is seen too: the watch
	// starts at rev.
	require.NoError(t, wait.Deleted(ctx, cli, "k", from, nil))

	abort := make(chan struct{})
	close(abort)
	require.NoError(t, wait.Deleted(ctx, cli, "other", 0, abort), "abort ends it, for a look again")

	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	require.ErrorIs(t, wait.Deleted(short, cli, "other", 0, nil), context.DeadlineExceeded)
}

// A follow that ends with its ctx is not followed by a backoff wait.
func TestLoadAndFollowDoesNotWaitAfterItsCtxEnded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	waits := 0
	b := wait.Backoff{Min: time.Hour, Max: time.Hour, OnWait: func(time.Duration) { waits++ }}
	err := wait.LoadAndFollow(ctx, &b, func() error { return nil }, func() bool { cancel(); return false })
	require.NoError(t, err)
	require.Zero(t, waits)
}

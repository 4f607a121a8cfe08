// Package wait holds the waiting steps that Baton's loops share: sleeping
// with a context, exponential backoff, waiting for an etcd key's deletion,
// and keeping a local picture of etcd keys current (load at a revision,
// watch from the next, load again when the watch breaks).
package wait

import (
	"context"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Sleep waits for d; it returns false if ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	return SleepOrWake(ctx, d, nil)
}

// SleepOrWake waits for d; it returns false if ctx ended first or wake
// delivered (or was closed) first. A nil wake never does.
func SleepOrWake(ctx context.Context, d time.Duration, wake <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-wake:
		return false
	case <-ctx.Done():
		return false
	}
}

// Backoff is an exponential delay between Min and Max: each Wait sleeps for
// the current delay and doubles the next one; Reset starts over at Min.
// The zero value of the unexported state is ready to use.
type Backoff struct {
	Min, Max time.Duration
	// OnWait, if set, is called with each delay before the sleep (tests).
	OnWait func(time.Duration)
	next   time.Duration
}

// Next returns the delay the next Wait sleeps for, and doubles the one
// after it.
func (b *Backoff) Next() time.Duration {
	d := max(b.next, b.Min)
	b.next = min(2*d, b.Max)
	return d
}

// Wait sleeps for Next(); it returns false if ctx ended first.
func (b *Backoff) Wait(ctx context.Context) bool {
	return b.WaitOrWake(ctx, nil)
}

// WaitOrWake sleeps for Next(), like SleepOrWake.
func (b *Backoff) WaitOrWake(ctx context.Context, wake <-chan struct{}) bool {
	d := b.Next()
	if b.OnWait != nil {
		b.OnWait(d)
	}
	return SleepOrWake(ctx, d, wake)
}

// Reset makes the next delay Min again.
func (b *Backoff) Reset() { b.next = b.Min }

// Deleted waits until key is deleted, watching from revision rev. It also
// returns nil when the watch breaks (compaction, etcd leader loss,
// connection loss) or abort delivers, so the caller looks again instead of
// missing the deletion; it returns ctx's error once ctx ends.
func Deleted(ctx context.Context, cli clientv3.Watcher, key string, rev int64, abort <-chan struct{}) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	ch := cli.Watch(wctx, key, clientv3.WithRev(rev))
	for {
		select {
		case wr, ok := <-ch:
			if !ok || wr.Err() != nil {
				return ctx.Err()
			}
			for _, ev := range wr.Events {
				if ev.Type == clientv3.EventTypeDelete {
					return nil
				}
			}
		case <-abort:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// ErrStop, wrapped in an error of LoadAndFollow's load, ends the loop.
var ErrStop = errors.New("wait: stop following")

// LoadAndFollow keeps a local picture of etcd keys current: load reads
// them at one revision, follow watches them from the next until a watch
// breaks, and then load runs again, so nothing a broken watch hid is
// missed. A load that fails, or a follow that ends without progress
// sooner than b.Max after it started, waits b's next delay first; a follow
// that made progress, or lasted b.Max, loads again at once. It returns
// when ctx ends (nil) or when load returns an error wrapping ErrStop
// (that error). load reports its own failures: the loop only paces them.
func LoadAndFollow(ctx context.Context, b *Backoff, load func() error, follow func() (progress bool)) error {
	for ctx.Err() == nil {
		if err := load(); errors.Is(err, ErrStop) {
			return err
		} else if err != nil {
			b.Wait(ctx)
			continue
		}
		start := time.Now()
		progress := follow()
		if ctx.Err() != nil {
			return nil
		}
		if progress || time.Since(start) >= b.Max {
			b.Reset()
		} else {
			b.Wait(ctx)
		}
	}
	return nil
}

package simetcd_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/baton-go/baton/internal/simetcd"
)

func newServer(t *testing.T) *simetcd.Server {
	t.Helper()
	s, err := simetcd.New(simetcd.Config{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// TestLeaseExpiresInVirtualTime: a session's lease keeps its key while the
// client lives, and the key goes a TTL after the client is closed without
// a goodbye, with a DELETE event on another client's watch.
func TestLeaseExpiresInVirtualTime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t)
		a, b := s.Connect().Client(), s.Connect().Client()
		defer b.Close()
		ctx := context.Background()
		sess, err := concurrency.NewSession(a, concurrency.WithTTL(2))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Put(ctx, "k", "v", clientv3.WithLease(sess.Lease())); err != nil {
			t.Fatal(err)
		}
		wch := b.Watch(ctx, "k")
		time.Sleep(time.Minute)
		if r, err := b.Get(ctx, "k"); err != nil || len(r.Kvs) != 1 {
			t.Fatalf("after a minute of keep-alives: %v, %v", r, err)
		}
		start := time.Now()
		a.Close() // a crash: no revoke
		ev := <-wch
		if len(ev.Events) != 1 || ev.Events[0].Type != clientv3.EventTypeDelete {
			t.Fatalf("want one DELETE, got %+v", ev)
		}
		// The last renewal was at most TTL/3 before the crash, and the
		// lessor looks for expired leases every 500ms.
		if d := time.Since(start); d < 2*time.Second*2/3 || d > 2*time.Second+500*time.Millisecond {
			t.Errorf("the key went %v after the crash; TTL 2s", d)
		}
	})
}

// TestElectionFailover: two candidates; the leader's client crashes; the
// other wins once the lease expires.
func TestElectionFailover(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := newServer(t)
		a, b := s.Connect().Client(), s.Connect().Client()
		defer b.Close()
		ctx := context.Background()
		sa, err := concurrency.NewSession(a, concurrency.WithTTL(2))
		if err != nil {
			t.Fatal(err)
		}
		sb, err := concurrency.NewSession(b, concurrency.WithTTL(2))
		if err != nil {
			t.Fatal(err)
		}
		defer sb.Close()
		ea, eb := concurrency.NewElection(sa, "e"), concurrency.NewElection(sb, "e")
		if err := ea.Campaign(ctx, "a"); err != nil {
			t.Fatal(err)
		}
		won := make(chan error, 1)
		go func() { won <- eb.Campaign(ctx, "b") }()
		time.Sleep(10 * time.Second)
		select {
		case err := <-won:
			t.Fatalf("b won while a leads: %v", err)
		default:
		}
		a.Close()
		if err := <-won; err != nil {
			t.Fatal(err)
		}
		r, err := eb.Leader(ctx)
		if err != nil || string(r.Kvs[0].Value) != "b" {
			t.Fatalf("leader %v, %v", r, err)
		}
	})
}

package simetcd_test

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/internal/simetcd"
)

// TestClockSkewExpiresLeasesEarly: a lease granted through a Conn whose
// clock runs 4 % slow expires on the Server after 96 % of its TTL from its
// grant or last renewal; a renewal after that finds it gone; leases of
// other Conns keep their full TTL; and while there is no leader it does
// not expire, then gets a fresh TTL×0.96 from the leader's return.
func TestClockSkewExpiresLeasesEarly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		expired := map[int64]time.Time{}
		s, err := simetcd.New(simetcd.Config{Dir: t.TempDir(), OnExpire: func(id int64) {
			mu.Lock()
			defer mu.Unlock()
			expired[id] = time.Now()
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		slowConn := s.Connect()
		slowConn.SetClockSkew(0.04)
		slow, fair := slowConn.Client(), s.Connect().Client()
		defer slow.Close()
		defer fair.Close()
		ctx := context.Background()
		expiredAt := func(id clientv3.LeaseID) (time.Time, bool) {
			mu.Lock()
			defer mu.Unlock()
			at, ok := expired[int64(id)]
			return at, ok
		}

		start := time.Now()
		a, err := slow.Grant(ctx, 10)
		if err != nil || a.TTL != 10 {
			t.Fatalf("grant: %v, %v", a, err)
		}
		b, err := fair.Grant(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		if _, err := slow.KeepAliveOnce(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		time.Sleep(9*time.Second + 500*time.Millisecond) // 14.5 s: 9.5 s after the renewal
		if _, ok := expiredAt(a.ID); ok {
			t.Fatalf("lease expired before 96 %% of its TTL from its renewal")
		}
		time.Sleep(200 * time.Millisecond)
		at, ok := expiredAt(a.ID)
		if !ok || at.Sub(start) != 5*time.Second+9600*time.Millisecond {
			t.Fatalf("skewed lease: expired %v at %v; want 14.6s after its grant", ok, at.Sub(start))
		}
		if _, err := slow.KeepAliveOnce(ctx, a.ID); err == nil {
			t.Fatal("a renewal after the early expiry succeeded")
		}
		if at, ok := expiredAt(b.ID); !ok || at.Sub(start) < 10*time.Second {
			t.Fatalf("fair lease: expired %v at %v; want no sooner than its TTL", ok, at.Sub(start))
		}

		c, err := slow.Grant(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		restore := s.LoseLeader()
		time.Sleep(30 * time.Second)
		if _, ok := expiredAt(c.ID); ok {
			t.Fatal("a lease expired while there was no leader")
		}
		back := time.Now()
		restore()
		time.Sleep(20 * time.Second)
		if at, ok := expiredAt(c.ID); !ok || at.Sub(back) != 9600*time.Millisecond {
			t.Fatalf("after the leader came back: expired %v, %v later; want 9.6s", ok, at.Sub(back))
		}
	})
}

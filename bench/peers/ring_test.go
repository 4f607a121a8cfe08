package main

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/baton-go/baton/internal/benchproc"
	"github.com/baton-go/baton/internal/recorder"
)

// TestRingJoinDrain runs four ring members on an embedded etcd: three
// share 60 items, a fourth joins and takes some, then drains and the three
// share them again. Overlaps are reported, not failed: the ring gives no
// promise against them.
func TestRingJoinDrain(t *testing.T) {
	endpoints := startEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	const items = 60
	var members []*ringMember
	defer func() {
		for _, m := range members {
			if err := m.p.leave(ctx); err != nil {
				t.Errorf("%s: leave: %v", m.own.member, err)
			}
		}
		checkRingGoroutinesEnded(t)
		report(t, members)
	}()
	for i := range 3 {
		members = append(members, startRingMember(ctx, t, endpoints, fmt.Sprintf("m%d", i), items))
	}
	waitOwned(t, "three members share the items", members, items)

	joiner := startRingMember(ctx, t, endpoints, "m3", items)
	members = append(members, joiner)
	waitOwned(t, "the fourth joined", members, items, func() string {
		if joiner.own.count() == 0 {
			return "m3 owns nothing"
		}
		return ""
	})
	t.Logf("m3 owns %d of %d items after joining", joiner.own.count(), items)

	if err := joiner.p.drain(ctx); err != nil {
		t.Fatalf("m3: drain: %v", err)
	}
	if n := joiner.own.count(); n != 0 {
		t.Fatalf("m3 owns %d items after drain, want 0", n)
	}
	waitOwned(t, "the fourth drained", members[:3], items, func() string {
		if members[0].p.(*ringPeer).ring.HasInstance("m3") {
			return "m3 is still in m0's ring"
		}
		return ""
	})
	if n := joiner.own.count(); n != 0 {
		t.Fatalf("m3 owns %d items after the others took them, want 0", n)
	}
}

// ringMember is one member of the test, in this process.
type ringMember struct {
	p   peer
	own *ownership
	rec *recorder.Recorder
}

// startRingMember starts ring member id (16 tokens, heartbeat 100 ms,
// timeout 2 s) recording into a recorder of its own, or fails the test.
func startRingMember(ctx context.Context, t *testing.T, endpoints []string, id string, items int) *ringMember {
	t.Helper()
	child := benchproc.NewChild(io.Discard)
	own := newOwnership(id, child.Rec)
	p, err := startRing(ctx, memberConfig{
		System:    "ring",
		ID:        id,
		Group:     "g",
		Items:     items,
		Session:   2 * time.Second,
		Heartbeat: 100 * time.Millisecond,
		Endpoints: endpoints,
		Tokens:    16,
	}, own, child)
	if err != nil {
		t.Fatalf("%s: startRing: %v", id, err)
	}
	return &ringMember{p: p, own: own, rec: child.Rec}
}

// waitOwned polls until each of the items is owned by exactly one of
// members and every extra condition holds (returns ""), and fails the test
// if that takes more than 20 s.
func waitOwned(t *testing.T, what string, members []*ringMember, items int, extra ...func() string) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(20 * time.Second)
	for {
		why := ownedOnce(members, items)
		for _, f := range extra {
			if why == "" {
				why = f()
			}
		}
		if why == "" {
			t.Logf("%s: every item owned once after %v", what, time.Since(start).Round(time.Microsecond))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s after %v", what, why, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ownedOnce is "" if each item is owned by exactly one of members, or
// what is wrong.
func ownedOnce(members []*ringMember, items int) string {
	owners := map[string][]string{}
	for _, m := range members {
		for _, it := range m.own.items() {
			owners[it] = append(owners[it], m.own.member)
		}
	}
	for i := range items {
		if o := owners[benchproc.SyncID(i)]; len(o) != 1 {
			return fmt.Sprintf("%s owned by %v", benchproc.SyncID(i), o)
		}
	}
	return ""
}

// report logs the overlaps and gaps of the members' merged record, and
// fails the test if Check finds anything else wrong with it.
func report(t *testing.T, members []*ringMember) {
	recs := make([]*recorder.Recorder, len(members))
	for i, m := range members {
		recs[i] = m.rec
	}
	merged := recorder.Merge(recs...)
	ovs := merged.Overlaps()
	var worst time.Duration
	for _, o := range ovs {
		worst = max(worst, o.Duration())
	}
	gaps := merged.Gaps()
	var longest recorder.Gap
	for _, g := range gaps {
		if g.Duration() > longest.Duration() {
			longest = g
		}
	}
	t.Logf("record: %d intervals, %d overlaps (longest %v), %d gaps (longest %v: %s from %s to %s)",
		len(merged.Intervals()), len(ovs), worst, len(gaps), longest.Duration(), longest.Sync, longest.From, longest.To)
	if err := merged.Check(); err != nil {
		for line := range strings.SplitSeq(err.Error(), "\n") {
			if !strings.Contains(line, "owned twice") && !strings.Contains(line, "more violations") {
				t.Errorf("Check: %s", line) // misuse of the recorder or a token rule: a bug here
			}
		}
	}
}

// checkRingGoroutinesEnded fails the test if a goroutine of ring.go or of
// the dskit services it starts is still running 5 s after every member
// left. dskit's etcd client has no Close, so its own goroutines stay.
func checkRingGoroutinesEnded(t *testing.T) {
	t.Helper()
	markers := []string{
		"bench/peers.(*ringPeer)", // package main is named by its path in a test
		"bench/peers.notifyingStore",
		"grafana/dskit/ring.",
		"grafana/dskit/services.",
		"grafana/dskit/kv/etcd.(*Client).Watch",
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var left []string
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			for _, m := range markers {
				if strings.Contains(g, m) {
					left = append(left, g)
					break
				}
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d goroutines still running after leave:\n%s", len(left), strings.Join(left, "\n\n"))
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// startEtcd starts a single-node etcd in this process, in t.TempDir(), on
// kernel-chosen loopback ports, closed when t ends, and returns its client
// endpoints.
func startEtcd(t *testing.T) []string {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Name = "ring-test"
	cfg.Dir = t.TempDir()
	loopback := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{loopback}
	cfg.AdvertiseClientUrls = []url.URL{loopback}
	cfg.ListenPeerUrls = []url.URL{loopback}
	cfg.AdvertisePeerUrls = []url.URL{loopback}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.UnsafeNoFsync = true
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop()) // it logs errors while closing
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		t.Fatalf("etcd stopped while starting: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("etcd not ready after 30s")
	}
	var endpoints []string
	for _, l := range e.Clients {
		endpoints = append(endpoints, "http://"+l.Addr().String())
	}
	return endpoints
}

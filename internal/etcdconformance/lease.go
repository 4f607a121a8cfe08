package etcdconformance

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// unknownLease is a lease ID nobody granted: etcd's IDs start with 16 bits
// of the member ID, and a fake must not hand out this one either.
const unknownLease = clientv3.LeaseID(0x7fff_0000_0000_0001)

// expiryWait bounds the wait for a 1s lease to expire: etcd checks for
// expired leases every 500ms and revokes them through raft.
const expiryWait = 3 * time.Second

func leaseScenarios() []Scenario {
	return []Scenario{
		{Name: "lease-grant-revoke", Run: scenarioLeaseGrantRevoke},
		{Name: "lease-revoke-watch", Run: scenarioLeaseRevokeWatch},
		{Name: "lease-keepalive", Run: scenarioLeaseKeepAlive},
		{Name: "lease-expiry", Run: scenarioLeaseExpiry},
	}
}

// timeToLive records a lease's TimeToLive: its ordinal, granted TTL,
// whether the remaining TTL is in (0, granted] (or the TTL when it is not
// positive), and the attached keys, sorted. It returns the remaining TTL, or
// 0 on error.
func timeToLive(t *testing.T, e Env, tr *Transcript, label string, id clientv3.LeaseID, opts ...clientv3.LeaseOption) int64 {
	t.Helper()
	resp, err := e.Client.TimeToLive(timeout(t), id, opts...)
	if err != nil {
		tr.Logf("%s: %s", label, tr.Err(err))
		return 0
	}
	ks := make([]string, len(resp.Keys))
	for i, k := range resp.Keys {
		ks[i] = string(k)
	}
	slices.Sort(ks)
	remaining := "ttl in (0,granted]"
	if resp.TTL <= 0 || resp.TTL > resp.GrantedTTL {
		remaining = fmt.Sprintf("ttl=%d", resp.TTL)
	}
	tr.Logf("%s: id=%s granted=%d %s keys=%v nil-keys=%t", label, tr.Lease(resp.ID), resp.GrantedTTL, remaining, ks, resp.Keys == nil)
	return resp.TTL
}

// leases records the client's Leases(), as sorted ordinals.
func leases(t *testing.T, e Env, tr *Transcript, label string) []string {
	t.Helper()
	resp, err := e.Client.Leases(timeout(t))
	if err != nil {
		tr.Logf("%s: %s", label, tr.Err(err))
		return nil
	}
	ls := make([]string, len(resp.Leases))
	for i, l := range resp.Leases {
		ls[i] = tr.Lease(l.ID)
	}
	slices.Sort(ls)
	tr.Logf("%s: %v", label, ls)
	return ls
}

// grant records a Grant.
func grant(t *testing.T, e Env, tr *Transcript, label string, ttl int64) *clientv3.LeaseGrantResponse {
	t.Helper()
	resp, err := e.Client.Grant(timeout(t), ttl)
	if err != nil {
		tr.Logf("%s: %s", label, tr.Err(err))
		return nil
	}
	tr.Logf("%s: id=%s ttl=%d rev=%s", label, tr.Lease(resp.ID), resp.TTL, tr.Rev(resp.ResponseHeader.Revision))
	return resp
}

func scenarioLeaseGrantRevoke(t *testing.T, e Env, tr *Transcript) {
	ctx := timeout(t)
	// TTLs below etcd's minimum (1s with the integration framework's
	// 100ms election timeout, and in the fake) are raised to it.
	for _, ttl := range []int64{1, 0, -5} {
		g := grant(t, e, tr, fmt.Sprintf("grant ttl %d", ttl), ttl)
		expect(t, g != nil && g.TTL == 1, "grant %d: ttl 1", ttl)
		if g != nil {
			_, err := e.Client.Revoke(ctx, g.ID)
			tr.Logf("revoke: %s", tr.Err(err))
		}
	}
	_, err := e.Client.Grant(ctx, 9_000_000_001)
	tr.Logf("grant ttl 9000000001: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrLeaseTTLTooLarge, "grant above the maximum TTL")

	g := grant(t, e, tr, "grant 60", 60)
	if g == nil {
		t.Fatal("grant 60 failed")
	}
	expect(t, g.TTL == 60, "grant 60: ttl 60")
	g2 := grant(t, e, tr, "grant 30", 30)
	put(t, e, tr, "put b lease", "b", "1", clientv3.WithLease(g.ID))
	put(t, e, tr, "put a lease", "a", "1", clientv3.WithLease(g.ID))
	put(t, e, tr, "put c", "c", "1")
	timeToLive(t, e, tr, "ttl with keys", g.ID, clientv3.WithAttachedKeys())
	timeToLive(t, e, tr, "ttl without keys", g.ID)
	timeToLive(t, e, tr, "ttl no keys attached", g2.ID, clientv3.WithAttachedKeys())
	ttl := timeToLive(t, e, tr, "ttl unknown", unknownLease, clientv3.WithAttachedKeys())
	expect(t, ttl == -1, "TimeToLive of an unknown lease: ttl -1")
	ka, err := e.Client.KeepAliveOnce(ctx, g.ID)
	if err == nil {
		tr.Logf("keepalive once: id=%s ttl=%d", tr.Lease(ka.ID), ka.TTL)
		expect(t, ka.TTL == 60, "keepalive once: ttl 60")
	} else {
		tr.Logf("keepalive once: %s", tr.Err(err))
		t.Errorf("keepalive once: %v", err)
	}
	_, err = e.Client.KeepAliveOnce(ctx, unknownLease)
	tr.Logf("keepalive once unknown: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrLeaseNotFound, "keepalive once of an unknown lease")
	ls := leases(t, e, tr, "leases")
	expect(t, len(ls) == 2, "two leases, got %v", ls)

	rv, err := e.Client.Revoke(ctx, g.ID)
	if err == nil {
		tr.Logf("revoke: rev=%s", tr.Rev(rv.Header.Revision))
		expect(t, rv.Header.Revision == tr.AbsRev(4), "revoke deletes both keys in one revision @4")
	} else {
		tr.Logf("revoke: %s", tr.Err(err))
		t.Errorf("revoke: %v", err)
	}
	r := get(t, e, tr, "get all", "", clientv3.WithFromKey())
	expect(t, keys(r) == "c", "only c left, got %s", keys(r))
	get(t, e, tr, "get a at @3", "a", clientv3.WithRev(tr.AbsRev(3)))
	_, err = e.Client.Revoke(ctx, g.ID)
	tr.Logf("revoke again: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrLeaseNotFound, "revoke a revoked lease")
	_, err = e.Client.KeepAliveOnce(ctx, g.ID)
	tr.Logf("keepalive once revoked: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrLeaseNotFound, "keepalive once of a revoked lease")
	ttl = timeToLive(t, e, tr, "ttl revoked", g.ID, clientv3.WithAttachedKeys())
	expect(t, ttl == -1, "TimeToLive of a revoked lease: ttl -1")
	_, err = e.Client.Put(ctx, "d", "1", clientv3.WithLease(g.ID))
	tr.Logf("put with revoked lease: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrLeaseNotFound, "put with a revoked lease")
	leases(t, e, tr, "leases after revoke")
	// Revoking a lease without keys does not change the revision.
	rv, err = e.Client.Revoke(ctx, g2.ID)
	if err == nil {
		tr.Logf("revoke keyless: rev=%s", tr.Rev(rv.Header.Revision))
	} else {
		tr.Logf("revoke keyless: %s", tr.Err(err))
	}
	leases(t, e, tr, "leases at end")
}

func scenarioLeaseRevokeWatch(t *testing.T, e Env, tr *Transcript) {
	g := grant(t, e, tr, "grant 60", 60)
	if g == nil {
		t.Fatal("grant failed")
	}
	for _, k := range []string{"w/c", "w/a", "w/b"} {
		put(t, e, tr, "put "+k+" lease", k, "1", clientv3.WithLease(g.ID))
	}
	put(t, e, tr, "put w/d", "w/d", "1")
	wch := e.Client.Watch(timeout(t), "w/", clientv3.WithPrefix(), clientv3.WithRev(tr.AbsRev(5)), clientv3.WithPrevKV())
	_, err := e.Client.Revoke(timeout(t), g.ID)
	must(t, err)
	resp := nextResponse(t, wch)
	tr.Logf("watch: %s", tr.events(resp.Events))
	var ks []string
	for _, ev := range resp.Events {
		expect(t, ev.Type == clientv3.EventTypeDelete && ev.Kv.ModRevision == tr.AbsRev(5), "delete at @5, got %s", tr.events(resp.Events))
		ks = append(ks, string(ev.Kv.Key))
	}
	expect(t, strings.Join(ks, ",") == "w/a,w/b,w/c", "one response, keys deleted in key order, got %v", ks)
}

func scenarioLeaseKeepAlive(t *testing.T, e Env, tr *Transcript) {
	g := grant(t, e, tr, "grant 1", 1)
	if g == nil {
		t.Fatal("grant failed")
	}
	put(t, e, tr, "put k lease", "k", "1", clientv3.WithLease(g.ID))
	wch := e.Client.Watch(timeout(t), "k", clientv3.WithRev(tr.AbsRev(2)))

	ctx, cancel := context.WithCancel(timeout(t))
	defer cancel()
	kch, err := e.Client.KeepAlive(ctx, g.ID)
	must(t, err)
	select {
	case ka, ok := <-kch:
		expect(t, ok, "keepalive channel open")
		if ok {
			tr.Logf("first keepalive: id=%s ttl=%d", tr.Lease(ka.ID), ka.TTL)
			expect(t, ka.TTL == 1, "keepalive ttl 1")
		}
	case <-time.After(opTimeout):
		t.Fatal("no keepalive response")
	}
	// Outlive the TTL twice over while the client keeps the lease alive.
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for range kch {
		}
	}()
	time.Sleep(2 * time.Second)
	r := get(t, e, tr, "get k after 2s of keepalive", "k")
	expect(t, r != nil && r.Count == 1, "the kept-alive key is still there")
	// The remaining TTL depends on when the last keepalive landed, and etcd
	// truncates it to whole seconds: only its range is compared.
	ka, err := e.Client.TimeToLive(timeout(t), g.ID)
	must(t, err)
	tr.Logf("ttl kept alive: granted=%d ttl in [0,granted]: %t", ka.GrantedTTL, ka.TTL >= 0 && ka.TTL <= ka.GrantedTTL)
	expect(t, ka.TTL >= 0 && ka.TTL <= 1, "kept-alive ttl in [0,1], got %d", ka.TTL)
	cancel()
	select {
	case <-drained:
		tr.Logf("keepalive channel closed after cancel")
	case <-time.After(opTimeout):
		t.Fatal("keepalive channel not closed after cancel")
	}
	// Without keepalives the lease expires.
	select {
	case resp := <-wch:
		tr.Logf("watch: %s", tr.events(resp.Events))
		expect(t, len(resp.Events) == 1 && resp.Events[0].Type == clientv3.EventTypeDelete, "the lease's key is deleted")
	case <-time.After(expiryWait):
		t.Fatal("lease did not expire")
	}
	ttl := timeToLive(t, e, tr, "ttl expired", g.ID)
	expect(t, ttl == -1, "TimeToLive of an expired lease: -1")
	// A new KeepAlive on an expired lease gives a closed channel.
	kch, err = e.Client.KeepAlive(timeout(t), g.ID)
	tr.Logf("keepalive on expired: %s", tr.Err(err))
	if err == nil {
		n := 0
		for range kch {
			n++
		}
		tr.Logf("keepalive on expired: channel closed after %d responses", n)
	}
}

func scenarioLeaseExpiry(t *testing.T, e Env, tr *Transcript) {
	g := grant(t, e, tr, "grant 1", 1)
	if g == nil {
		t.Fatal("grant failed")
	}
	put(t, e, tr, "put x/b lease", "x/b", "1", clientv3.WithLease(g.ID))
	put(t, e, tr, "put x/a lease", "x/a", "1", clientv3.WithLease(g.ID))
	put(t, e, tr, "put x/c", "x/c", "1")
	wch := e.Client.Watch(timeout(t), "x/", clientv3.WithPrefix(), clientv3.WithRev(tr.AbsRev(4)), clientv3.WithPrevKV())
	// Half the TTL later the keys are still there.
	time.Sleep(500 * time.Millisecond)
	r := get(t, e, tr, "get x/ at half ttl", "x/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	expect(t, r != nil && r.Count == 3, "keys present before the TTL")
	ttl := timeToLive(t, e, tr, "ttl at half ttl", g.ID, clientv3.WithAttachedKeys())
	// etcd truncates the remaining time to whole seconds: a live lease with
	// less than a second left reports TTL 0.
	expect(t, ttl == 0, "remaining TTL at half TTL is 0, got %d", ttl)
	select {
	case resp := <-wch:
		tr.Logf("watch: %s", tr.events(resp.Events))
		expect(t, len(resp.Events) == 2, "both keys deleted in one response")
		for _, ev := range resp.Events {
			expect(t, ev.Type == clientv3.EventTypeDelete && ev.Kv.ModRevision == tr.AbsRev(4), "delete at @4")
		}
	case <-time.After(expiryWait):
		t.Fatal("lease did not expire")
	}
	r = get(t, e, tr, "get x/ after expiry", "x/", clientv3.WithPrefix())
	expect(t, keys(r) == "x/c", "only x/c left, got %s", keys(r))
	ttl = timeToLive(t, e, tr, "ttl expired", g.ID, clientv3.WithAttachedKeys())
	expect(t, ttl == -1, "TimeToLive of an expired lease: -1")
	ls := leases(t, e, tr, "leases after expiry")
	expect(t, len(ls) == 0, "no leases")
	_, err := e.Client.KeepAliveOnce(timeout(t), g.ID)
	tr.Logf("keepalive once expired: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrLeaseNotFound, "keepalive once of an expired lease")
	_, err = e.Client.Put(timeout(t), "x/d", "1", clientv3.WithLease(g.ID))
	tr.Logf("put with expired lease: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrLeaseNotFound, "put with an expired lease")
}

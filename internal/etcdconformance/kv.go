package etcdconformance

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func kvScenarios() []Scenario {
	return []Scenario{
		{Name: "kv-put-get", Run: scenarioPutGet},
		{Name: "kv-range", Run: scenarioRange},
		{Name: "kv-sort", Run: scenarioSort},
		{Name: "kv-rev-compact", Run: scenarioRevCompact},
		{Name: "kv-delete", Run: scenarioDelete},
		{Name: "kv-ignore-lease", Run: scenarioIgnoreLease},
	}
}

// must fails t on a non-nil error.
func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
}

// expect fails t (without stopping it) unless cond holds.
func expect(t *testing.T, cond bool, format string, args ...any) {
	t.Helper()
	if !cond {
		t.Errorf("expected: "+format, args...)
	}
}

// expectErr fails t unless err is want (by errors.Is, or for etcd errors by
// message, as the client re-creates them).
func expectErr(t *testing.T, err, want error, what string) {
	t.Helper()
	if !errors.Is(err, want) && errKind(err) != errKind(want) {
		t.Errorf("%s: got error %v, want %v", what, err, want)
	}
}

// get records and returns a Get; on error it records the error and returns
// nil.
func get(t *testing.T, e Env, tr *Transcript, label, key string, opts ...clientv3.OpOption) *clientv3.GetResponse {
	t.Helper()
	resp, err := e.Client.Get(timeout(t), key, opts...)
	if err != nil {
		tr.Logf("%s: %s", label, tr.Err(err))
		return nil
	}
	tr.Logf("%s: %s", label, tr.getResp(resp))
	return resp
}

// put records and returns a Put; on error it records the error and returns
// nil.
func put(t *testing.T, e Env, tr *Transcript, label, key, val string, opts ...clientv3.OpOption) *clientv3.PutResponse {
	t.Helper()
	resp, err := e.Client.Put(timeout(t), key, val, opts...)
	if err != nil {
		tr.Logf("%s: %s", label, tr.Err(err))
		return nil
	}
	tr.Logf("%s: rev=%s prev=%s", label, tr.Rev(resp.Header.Revision), tr.kv(resp.PrevKv))
	return resp
}

// del records and returns a Delete; on error it records the error and
// returns nil.
func del(t *testing.T, e Env, tr *Transcript, label, key string, opts ...clientv3.OpOption) *clientv3.DeleteResponse {
	t.Helper()
	resp, err := e.Client.Delete(timeout(t), key, opts...)
	if err != nil {
		tr.Logf("%s: %s", label, tr.Err(err))
		return nil
	}
	tr.Logf("%s: rev=%s deleted=%d prev=%s", label, tr.Rev(resp.Header.Revision), resp.Deleted, tr.kvs(resp.PrevKvs))
	return resp
}

// keys lists the keys of a Get, or "error" for a nil one.
func keys(resp *clientv3.GetResponse) string {
	if resp == nil {
		return "error"
	}
	ks := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		ks[i] = string(kv.Key)
	}
	return strings.Join(ks, ",")
}

func scenarioPutGet(t *testing.T, e Env, tr *Transcript) {
	p := put(t, e, tr, "put a=1", "a", "1", clientv3.WithPrevKV())
	expect(t, p != nil && p.Header.Revision == tr.AbsRev(1) && p.PrevKv == nil, "first put at @1 without prev")
	p = put(t, e, tr, "put a=2 prevkv", "a", "2", clientv3.WithPrevKV())
	expect(t, p != nil && p.PrevKv != nil && string(p.PrevKv.Value) == "1", "prev kv a=1")
	put(t, e, tr, "put a=3 no prevkv", "a", "3")
	put(t, e, tr, "put b empty value", "b", "")
	g := get(t, e, tr, "get a", "a")
	expect(t, g != nil && len(g.Kvs) == 1, "one kv for a")
	if g != nil && len(g.Kvs) == 1 {
		kv := g.Kvs[0]
		expect(t, kv.CreateRevision == tr.AbsRev(1) && kv.ModRevision == tr.AbsRev(3) && kv.Version == 3 && kv.Lease == 0,
			"a created @1, modified @3, version 3, no lease; got %s", tr.kv(kv))
	}
	g = get(t, e, tr, "get b", "b")
	expect(t, g != nil && g.Count == 1, "empty value is a key")
	g = get(t, e, tr, "get missing", "zz")
	expect(t, g != nil && g.Count == 0 && g.Header.Revision == tr.AbsRev(4), "missing key, header at @4")
	_, err := e.Client.Put(timeout(t), "", "x")
	tr.Logf("put empty key: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrEmptyKey, "put empty key")
	_, err = e.Client.Get(timeout(t), "")
	tr.Logf("get empty key: %s", tr.Err(err))
	// Deleting and re-creating a key resets its version and create revision.
	del(t, e, tr, "delete a", "a")
	put(t, e, tr, "put a again", "a", "4")
	g = get(t, e, tr, "get a again", "a")
	expect(t, g != nil && len(g.Kvs) == 1 && g.Kvs[0].Version == 1 && g.Kvs[0].CreateRevision == tr.AbsRev(6), "recreated a has version 1, created @6")
}

func scenarioRange(t *testing.T, e Env, tr *Transcript) {
	for _, k := range []string{"a", "b", "c", "d/1", "d/2", "e"} {
		put(t, e, tr, "put "+k, k, "v"+k)
	}
	g := get(t, e, tr, "prefix d/", "d/", clientv3.WithPrefix())
	expect(t, keys(g) == "d/1,d/2", "prefix d/ gives d/1,d/2, got %s", keys(g))
	g = get(t, e, tr, "from key c", "c", clientv3.WithFromKey())
	expect(t, keys(g) == "c,d/1,d/2,e", "from key c, got %s", keys(g))
	g = get(t, e, tr, "from empty key", "", clientv3.WithFromKey())
	expect(t, keys(g) == "a,b,c,d/1,d/2,e", "from empty key gives all, got %s", keys(g))
	g = get(t, e, tr, "prefix empty", "", clientv3.WithPrefix())
	expect(t, keys(g) == "a,b,c,d/1,d/2,e", "empty prefix gives all, got %s", keys(g))
	g = get(t, e, tr, "range b..d", "b", clientv3.WithRange("d"))
	expect(t, keys(g) == "b,c", "range [b,d), got %s", keys(g))
	get(t, e, tr, "range b..b", "b", clientv3.WithRange("b"))
	get(t, e, tr, "range c..a", "c", clientv3.WithRange("a"))
	g = get(t, e, tr, "limit 2", "", clientv3.WithFromKey(), clientv3.WithLimit(2))
	expect(t, g != nil && len(g.Kvs) == 2 && g.More && g.Count == 6, "limit 2: 2 kvs, more, count 6")
	g = get(t, e, tr, "limit 6", "", clientv3.WithFromKey(), clientv3.WithLimit(6))
	expect(t, g != nil && len(g.Kvs) == 6 && !g.More, "limit 6: all, no more")
	get(t, e, tr, "limit 1 prefix d/", "d/", clientv3.WithPrefix(), clientv3.WithLimit(1))
	g = get(t, e, tr, "count only", "", clientv3.WithFromKey(), clientv3.WithCountOnly())
	expect(t, g != nil && len(g.Kvs) == 0 && g.Count == 6, "count only: count 6, no kvs")
	get(t, e, tr, "count only limit 1", "", clientv3.WithFromKey(), clientv3.WithCountOnly(), clientv3.WithLimit(1))
	g = get(t, e, tr, "keys only", "d/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	expect(t, g != nil && len(g.Kvs) == 2 && len(g.Kvs[0].Value) == 0, "keys only: no values")
	get(t, e, tr, "keys only single", "a", clientv3.WithKeysOnly())
	get(t, e, tr, "min mod rev 5", "", clientv3.WithFromKey(), clientv3.WithMinModRev(tr.AbsRev(5)))
	get(t, e, tr, "max create rev 2", "", clientv3.WithFromKey(), clientv3.WithMaxCreateRev(tr.AbsRev(2)))
}

func scenarioSort(t *testing.T, e Env, tr *Transcript) {
	// Every sort target orders the four keys differently and has no ties
	// (etcd's sort is not stable): versions a1 b3 c2 d4; created c a d b;
	// modified a b d c; values c<a<d<b.
	for _, kv := range [][2]string{
		{"s/c", "0"}, {"s/a", "m"}, {"s/d", "0"}, {"s/b", "0"}, {"s/d", "1"},
		{"s/b", "1"}, {"s/d", "2"}, {"s/b", "z"}, {"s/d", "q"}, {"s/c", "a"},
	} {
		put(t, e, tr, "put "+kv[0]+"="+kv[1], kv[0], kv[1])
	}
	targets := []struct {
		name   string
		target clientv3.SortTarget
		asc    string
	}{
		{"key", clientv3.SortByKey, "s/a,s/b,s/c,s/d"},
		{"version", clientv3.SortByVersion, "s/a,s/c,s/b,s/d"},
		{"create", clientv3.SortByCreateRevision, "s/c,s/a,s/d,s/b"},
		{"mod", clientv3.SortByModRevision, "s/a,s/b,s/d,s/c"},
		{"value", clientv3.SortByValue, "s/c,s/a,s/d,s/b"},
	}
	for _, tg := range targets {
		g := get(t, e, tr, "sort "+tg.name+" asc", "s/", clientv3.WithPrefix(), clientv3.WithSort(tg.target, clientv3.SortAscend))
		expect(t, keys(g) == tg.asc, "sort %s ascending: got %s, want %s", tg.name, keys(g), tg.asc)
		g = get(t, e, tr, "sort "+tg.name+" desc", "s/", clientv3.WithPrefix(), clientv3.WithSort(tg.target, clientv3.SortDescend))
		expect(t, keys(g) == reverse(tg.asc), "sort %s descending: got %s", tg.name, keys(g))
		get(t, e, tr, "sort "+tg.name+" desc limit 2", "s/", clientv3.WithPrefix(), clientv3.WithSort(tg.target, clientv3.SortDescend), clientv3.WithLimit(2))
	}
	get(t, e, tr, "sort none desc", "s/", clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortNone))
	get(t, e, tr, "first create", "s/", clientv3.WithFirstCreate()...)
	get(t, e, tr, "last rev", "s/", clientv3.WithLastRev()...)
}

// reverse reverses a comma-separated list.
func reverse(list string) string {
	parts := strings.Split(list, ",")
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, ",")
}

func scenarioRevCompact(t *testing.T, e Env, tr *Transcript) {
	put(t, e, tr, "put k=1", "k", "1") // @1
	put(t, e, tr, "put k=2", "k", "2") // @2
	put(t, e, tr, "put k=3", "k", "3") // @3
	del(t, e, tr, "delete k", "k")     // @4
	put(t, e, tr, "put k=5", "k", "5") // @5
	for rel := int64(1); rel <= 5; rel++ {
		g := get(t, e, tr, fmt.Sprintf("get k rev @%d", rel), "k", clientv3.WithRev(tr.AbsRev(rel)))
		expect(t, g != nil && g.Header.Revision == tr.AbsRev(5), "a historical read's header has the current revision")
	}
	_, err := e.Client.Get(timeout(t), "k", clientv3.WithRev(tr.AbsRev(6)))
	tr.Logf("get k rev @6: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrFutureRev, "get at a future revision")

	compact(t, e, tr, 3)
	_, err = e.Client.Get(timeout(t), "k", clientv3.WithRev(tr.AbsRev(2)))
	tr.Logf("get k rev @2 after compact @3: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrCompacted, "get below the compacted revision")
	g := get(t, e, tr, "get k rev @3 after compact @3", "k", clientv3.WithRev(tr.AbsRev(3)))
	expect(t, g != nil && len(g.Kvs) == 1, "the compacted revision itself stays readable")
	get(t, e, tr, "get k rev @4 after compact @3", "k", clientv3.WithRev(tr.AbsRev(4)))
	get(t, e, tr, "prefix k rev @3", "k", clientv3.WithPrefix(), clientv3.WithRev(tr.AbsRev(3)))
	err = compact(t, e, tr, 3)
	expectErr(t, err, rpctypes.ErrCompacted, "compact at the compacted revision")
	compact(t, e, tr, 1)
	err = compact(t, e, tr, 7)
	expectErr(t, err, rpctypes.ErrFutureRev, "compact at a future revision")
	_, err = e.Client.Compact(timeout(t), tr.AbsRev(5), clientv3.WithCompactPhysical())
	tr.Logf("compact @5 physical: %s", tr.Err(err))
	must(t, err)
	_, err = e.Client.Get(timeout(t), "k", clientv3.WithRev(tr.AbsRev(4)))
	tr.Logf("get k rev @4 after compact @5: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrCompacted, "get below the compacted revision")
	get(t, e, tr, "get k after compact @5", "k")
}

// compact compacts at a relative revision and records the outcome.
func compact(t *testing.T, e Env, tr *Transcript, rel int64) error {
	resp, err := e.Client.Compact(timeout(t), tr.AbsRev(rel))
	if err != nil {
		tr.Logf("compact @%d: %s", rel, tr.Err(err))
		return err
	}
	tr.Logf("compact @%d: rev=%s", rel, tr.Rev(resp.Header.Revision))
	return nil
}

func scenarioDelete(t *testing.T, e Env, tr *Transcript) {
	for _, k := range []string{"a", "b", "c", "d/1", "d/2", "e", "f"} {
		put(t, e, tr, "put "+k, k, "v"+k)
	}
	d := del(t, e, tr, "delete missing", "zz")
	expect(t, d != nil && d.Deleted == 0 && d.Header.Revision == tr.AbsRev(7), "deleting nothing keeps the revision")
	d = del(t, e, tr, "delete a prevkv", "a", clientv3.WithPrevKV())
	expect(t, d != nil && d.Deleted == 1 && len(d.PrevKvs) == 1 && d.Header.Revision == tr.AbsRev(8), "delete a")
	d = del(t, e, tr, "delete prefix d/ prevkv", "d/", clientv3.WithPrefix(), clientv3.WithPrevKV())
	expect(t, d != nil && d.Deleted == 2 && len(d.PrevKvs) == 2 && d.Header.Revision == tr.AbsRev(9), "one revision for two deletes")
	d = del(t, e, tr, "delete range b..d", "b", clientv3.WithRange("d"))
	expect(t, d != nil && d.Deleted == 2 && len(d.PrevKvs) == 0, "range delete of b,c without prev")
	d = del(t, e, tr, "delete from e", "e", clientv3.WithFromKey(), clientv3.WithPrevKV())
	expect(t, d != nil && d.Deleted == 2, "from-key delete of e,f")
	del(t, e, tr, "delete prefix empty", "", clientv3.WithPrefix())
	g := get(t, e, tr, "get all", "", clientv3.WithFromKey())
	expect(t, g != nil && g.Count == 0 && g.Header.Revision == tr.AbsRev(11), "all deleted, at @11")
	// A deleted key's history stays readable.
	get(t, e, tr, "get a at @7", "a", clientv3.WithRev(tr.AbsRev(7)))
}

func scenarioIgnoreLease(t *testing.T, e Env, tr *Transcript) {
	ctx := timeout(t)
	l1, err := e.Client.Grant(ctx, 60)
	must(t, err)
	l2, err := e.Client.Grant(ctx, 60)
	must(t, err)
	tr.Logf("grant: %s ttl=%d, %s ttl=%d", tr.Lease(l1.ID), l1.TTL, tr.Lease(l2.ID), l2.TTL)
	put(t, e, tr, "put k=v lease L1", "k", "v", clientv3.WithLease(l1.ID))
	get(t, e, tr, "get k", "k")
	put(t, e, tr, "put k ignore value lease L2", "k", "", clientv3.WithIgnoreValue(), clientv3.WithLease(l2.ID), clientv3.WithPrevKV())
	g := get(t, e, tr, "get k", "k")
	expect(t, g != nil && len(g.Kvs) == 1 && string(g.Kvs[0].Value) == "v" && g.Kvs[0].Lease == int64(l2.ID), "ignore value keeps v, takes L2")
	put(t, e, tr, "put k=w ignore lease", "k", "w", clientv3.WithIgnoreLease())
	g = get(t, e, tr, "get k", "k")
	expect(t, g != nil && len(g.Kvs) == 1 && string(g.Kvs[0].Value) == "w" && g.Kvs[0].Lease == int64(l2.ID), "ignore lease keeps L2")
	put(t, e, tr, "put k ignore both", "k", "", clientv3.WithIgnoreValue(), clientv3.WithIgnoreLease())
	get(t, e, tr, "get k", "k")
	put(t, e, tr, "put k=x no lease", "k", "x")
	get(t, e, tr, "get k", "k")

	_, err = e.Client.Put(ctx, "missing", "", clientv3.WithIgnoreValue())
	tr.Logf("put missing ignore value: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrKeyNotFound, "ignore value on a missing key")
	_, err = e.Client.Put(ctx, "missing", "x", clientv3.WithIgnoreLease())
	tr.Logf("put missing ignore lease: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrKeyNotFound, "ignore lease on a missing key")
	_, err = e.Client.Put(ctx, "k", "y", clientv3.WithIgnoreValue())
	tr.Logf("put k=y ignore value: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrValueProvided, "ignore value with a value")
	_, err = e.Client.Put(ctx, "k", "y", clientv3.WithIgnoreLease(), clientv3.WithLease(l1.ID))
	tr.Logf("put k ignore lease with lease: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrLeaseProvided, "ignore lease with a lease")

	_, err = e.Client.Put(ctx, "k2", "v", clientv3.WithLease(unknownLease))
	tr.Logf("put with unknown lease: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrLeaseNotFound, "put with an unknown lease")
	g = get(t, e, tr, "get after failed puts", "", clientv3.WithFromKey())
	expect(t, g != nil && g.Header.Revision == tr.AbsRev(5), "failed puts do not change the revision")
}

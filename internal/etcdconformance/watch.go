package etcdconformance

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func watchScenarios() []Scenario {
	return []Scenario{
		{Name: "watch-basic", Run: scenarioWatchBasic},
		{Name: "watch-replay", Run: scenarioWatchReplay},
		{Name: "watch-filter", Run: scenarioWatchFilter},
		{Name: "watch-compacted", Run: scenarioWatchCompacted},
		{Name: "watch-cancel", Run: scenarioWatchCancel},
		{Name: "watch-txn", Run: scenarioWatchTxn},
		{Name: "watch-progress", Run: scenarioWatchProgress},
		{Name: "watch-many", Run: scenarioWatchMany},
		{Name: "watch-require-leader", Run: scenarioWatchRequireLeader},
	}
}

// nextResponse returns the next watch response, failing t if the channel
// closes or nothing comes within opTimeout.
func nextResponse(t *testing.T, wch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	select {
	case resp, ok := <-wch:
		if !ok {
			t.Fatal("watch channel closed")
		}
		return resp
	case <-time.After(opTimeout):
		t.Fatal("no watch response")
	}
	return clientv3.WatchResponse{}
}

// created waits for the created notification of a watch made with
// WithCreatedNotify and records its header revision.
func created(t *testing.T, tr *Transcript, label string, wch clientv3.WatchChan) {
	t.Helper()
	resp := awaitCreated(t, wch)
	tr.Logf("%s: created=%t rev=%s events=%d", label, resp.Created, tr.Rev(resp.Header.Revision), len(resp.Events))
}

// awaitCreated waits for the created notification of a watch made with
// WithCreatedNotify.
func awaitCreated(t *testing.T, wch clientv3.WatchChan) clientv3.WatchResponse {
	t.Helper()
	resp := nextResponse(t, wch)
	expect(t, resp.Created && len(resp.Events) == 0, "a created notification first")
	return resp
}

// collect receives until n events arrived and returns them. Responses split
// events differently on different etcds, so it returns them flat, but it
// fails t if the events of one revision span two responses, or if a
// response without events comes.
func collect(t *testing.T, wch clientv3.WatchChan, n int) []*clientv3.Event {
	t.Helper()
	var evs []*clientv3.Event
	for len(evs) < n {
		resp := nextResponse(t, wch)
		if err := resp.Err(); err != nil || len(resp.Events) == 0 {
			t.Fatalf("watch response without events (err %v, created %t, progress %t)", err, resp.Created, resp.IsProgressNotify())
		}
		if len(evs) > 0 && evs[len(evs)-1].Kv.ModRevision == resp.Events[0].Kv.ModRevision {
			t.Errorf("events of revision %d span two responses", resp.Events[0].Kv.ModRevision)
		}
		evs = append(evs, resp.Events...)
	}
	if len(evs) > n {
		t.Errorf("got %d events, want %d", len(evs), n)
	}
	return evs
}

// closedAfter receives until the channel closes and returns the responses
// before it; it fails t if it stays open for opTimeout.
func closedAfter(t *testing.T, wch clientv3.WatchChan) []clientv3.WatchResponse {
	t.Helper()
	var resps []clientv3.WatchResponse
	deadline := time.After(opTimeout)
	for {
		select {
		case resp, ok := <-wch:
			if !ok {
				return resps
			}
			resps = append(resps, resp)
		case <-deadline:
			t.Fatal("watch channel not closed")
		}
	}
}

func scenarioWatchBasic(t *testing.T, e Env, tr *Transcript) {
	put(t, e, tr, "put a=0", "a", "0") // @1
	wch := e.Client.Watch(timeout(t), "a", clientv3.WithCreatedNotify())
	created(t, tr, "watch a", wch)
	put(t, e, tr, "put a=1", "a", "1") // @2
	put(t, e, tr, "put b=1", "b", "1") // @3
	del(t, e, tr, "delete a", "a")     // @4
	evs := collect(t, wch, 2)
	tr.Logf("watch a: %s", tr.events(evs))
	expect(t, evs[0].Type == clientv3.EventTypePut && evs[0].Kv.ModRevision == tr.AbsRev(2) && evs[0].IsModify(), "put a @2, a modify")
	expect(t, evs[1].Type == clientv3.EventTypeDelete && evs[1].Kv.ModRevision == tr.AbsRev(4), "delete a @4")

	pch := e.Client.Watch(timeout(t), "a", clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	created(t, tr, "watch a prevkv", pch)
	put(t, e, tr, "put a=2", "a", "2")
	put(t, e, tr, "put a=3", "a", "3")
	del(t, e, tr, "delete a", "a")
	evs = collect(t, pch, 3)
	tr.Logf("watch a prevkv: %s", tr.events(evs))
	expect(t, evs[0].PrevKv == nil && evs[0].IsCreate(), "a create has no prev kv")
	expect(t, evs[1].PrevKv != nil && string(evs[1].PrevKv.Value) == "2", "prev kv a=2")
	expect(t, evs[2].PrevKv != nil && string(evs[2].PrevKv.Value) == "3", "prev kv of delete a=3")

	xch := e.Client.Watch(timeout(t), "p/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	fch := e.Client.Watch(timeout(t), "p/2", clientv3.WithFromKey(), clientv3.WithCreatedNotify())
	created(t, tr, "watch prefix p/", xch)
	created(t, tr, "watch from p/2", fch)
	put(t, e, tr, "put p/1", "p/1", "1")
	put(t, e, tr, "put q", "q", "1")
	put(t, e, tr, "put p/2", "p/2", "1")
	put(t, e, tr, "put p", "p", "1")
	evs = collect(t, xch, 2)
	tr.Logf("watch prefix p/: %s", tr.events(evs))
	expect(t, string(evs[0].Kv.Key) == "p/1" && string(evs[1].Kv.Key) == "p/2", "prefix watch sees p/1, p/2")
	evs = collect(t, fch, 2)
	tr.Logf("watch from p/2: %s", tr.events(evs))
	expect(t, string(evs[0].Kv.Key) == "q" && string(evs[1].Kv.Key) == "p/2", "from-key watch sees q, p/2")
}

func scenarioWatchReplay(t *testing.T, e Env, tr *Transcript) {
	put(t, e, tr, "put a=1", "a", "1")                                                                         // @1
	put(t, e, tr, "put a=2", "a", "2")                                                                         // @2
	put(t, e, tr, "put b=1", "b", "1")                                                                         // @3
	del(t, e, tr, "delete a", "a")                                                                             // @4
	txn(t, e, tr, "txn put a, b", nil, []clientv3.Op{clientv3.OpPut("a", "5"), clientv3.OpPut("b", "5")}, nil) // @5

	evs := collect(t, e.Client.Watch(timeout(t), "a", clientv3.WithRev(tr.AbsRev(1)), clientv3.WithPrevKV()), 4)
	tr.Logf("watch a from @1: %s", tr.events(evs))
	expect(t, evs[3].Kv.ModRevision == tr.AbsRev(5), "replay reaches @5")
	evs = collect(t, e.Client.Watch(timeout(t), "", clientv3.WithPrefix(), clientv3.WithRev(tr.AbsRev(3))), 4)
	tr.Logf("watch all from @3: %s", tr.events(evs))
	wch := e.Client.Watch(timeout(t), "", clientv3.WithFromKey(), clientv3.WithRev(tr.AbsRev(7)))
	put(t, e, tr, "put c", "c", "1") // @6
	put(t, e, tr, "put d", "d", "1") // @7
	evs = collect(t, wch, 1)
	tr.Logf("watch all from future @7: %s", tr.events(evs))
	expect(t, string(evs[0].Kv.Key) == "d", "a watch from a future revision starts there")
	// A watch from revision 1 of a fresh store replays everything.
	evs = collect(t, e.Client.Watch(timeout(t), "b", clientv3.WithRev(1)), 2)
	tr.Logf("watch b from rev 1: %s", tr.events(evs))
}

func scenarioWatchFilter(t *testing.T, e Env, tr *Transcript) {
	noPut := e.Client.Watch(timeout(t), "x/", clientv3.WithPrefix(), clientv3.WithFilterPut(), clientv3.WithCreatedNotify())
	noDel := e.Client.Watch(timeout(t), "x/", clientv3.WithPrefix(), clientv3.WithFilterDelete(), clientv3.WithCreatedNotify())
	created(t, tr, "watch no puts", noPut)
	created(t, tr, "watch no deletes", noDel)
	put(t, e, tr, "put x/1", "x/1", "1")
	put(t, e, tr, "put x/2", "x/2", "1")
	del(t, e, tr, "delete x/1", "x/1")
	put(t, e, tr, "put x/3", "x/3", "1")
	del(t, e, tr, "delete x/", "x/", clientv3.WithPrefix())
	evs := collect(t, noPut, 3)
	tr.Logf("watch no puts: %s", tr.events(evs))
	for _, ev := range evs {
		expect(t, ev.Type == clientv3.EventTypeDelete, "only deletes, got %s", tr.events(evs))
	}
	evs = collect(t, noDel, 3)
	tr.Logf("watch no deletes: %s", tr.events(evs))
	for _, ev := range evs {
		expect(t, ev.Type == clientv3.EventTypePut, "only puts, got %s", tr.events(evs))
	}
}

func scenarioWatchCompacted(t *testing.T, e Env, tr *Transcript) {
	for i := 1; i <= 5; i++ {
		put(t, e, tr, fmt.Sprintf("put k=%d", i), "k", fmt.Sprint(i))
	}
	compact(t, e, tr, 4)
	for _, rel := range []int64{2, 3} {
		resps := closedAfter(t, e.Client.Watch(timeout(t), "k", clientv3.WithRev(tr.AbsRev(rel))))
		seen := false
		for _, r := range resps {
			tr.Logf("watch from @%d: compact=%s canceled=%t err=%s events=%d", rel, tr.Rev(r.CompactRevision), r.Canceled, tr.Err(r.Err()), len(r.Events))
			if r.CompactRevision == tr.AbsRev(4) && r.Canceled && errKind(r.Err()) == errKind(rpctypes.ErrCompacted) {
				seen = true
			}
		}
		tr.Logf("watch from @%d: closed", rel)
		expect(t, seen, "watch from compacted @%d: a canceled response with compact revision @4 and ErrCompacted", rel)
	}
	evs := collect(t, e.Client.Watch(timeout(t), "k", clientv3.WithRev(tr.AbsRev(4))), 2)
	tr.Logf("watch from @4: %s", tr.events(evs))
}

func scenarioWatchCancel(t *testing.T, e Env, tr *Transcript) {
	ctx1, cancel1 := context.WithCancel(timeout(t))
	defer cancel1()
	w1 := e.Client.Watch(ctx1, "k", clientv3.WithCreatedNotify())
	w2 := e.Client.Watch(timeout(t), "k", clientv3.WithCreatedNotify())
	created(t, tr, "watch 1", w1)
	created(t, tr, "watch 2", w2)
	put(t, e, tr, "put k=1", "k", "1")
	tr.Logf("watch 1: %s", tr.events(collect(t, w1, 1)))
	tr.Logf("watch 2: %s", tr.events(collect(t, w2, 1)))
	cancel1()
	// What a canceled watch delivers before closing is not specified; only
	// that it closes.
	closedAfter(t, w1)
	tr.Logf("watch 1 closed after cancel")
	put(t, e, tr, "put k=2", "k", "2")
	tr.Logf("watch 2: %s", tr.events(collect(t, w2, 1)))
	// A watch on an already canceled context is closed at once.
	ctx3, cancel3 := context.WithCancel(timeout(t))
	cancel3()
	closedAfter(t, e.Client.Watch(ctx3, "k"))
	tr.Logf("watch on canceled ctx closed")
}

func scenarioWatchTxn(t *testing.T, e Env, tr *Transcript) {
	put(t, e, tr, "put t/c", "t/c", "1")
	wch := e.Client.Watch(timeout(t), "t/", clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithCreatedNotify())
	created(t, tr, "watch t/", wch)
	txn(t, e, tr, "txn", nil, []clientv3.Op{
		clientv3.OpPut("t/b", "1"),
		clientv3.OpDelete("t/c"),
		clientv3.OpPut("t/a", "1"),
		clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut("t/d", "1"), clientv3.OpPut("u", "1")}, nil),
		clientv3.OpDelete("t/missing"),
	}, nil)
	resp := nextResponse(t, wch)
	tr.Logf("watch t/: %s", tr.events(resp.Events))
	expect(t, len(resp.Events) == 4, "one response with the txn's four events, got %d", len(resp.Events))
	for _, ev := range resp.Events {
		expect(t, ev.Kv.ModRevision == tr.AbsRev(2), "all at @2")
	}
	// A txn that puts a key twice is refused, so the one-key-once rule
	// makes the order within a revision the order of the ops.
	txn(t, e, tr, "txn delete prefix", nil, []clientv3.Op{clientv3.OpDelete("t/", clientv3.WithPrefix())}, nil)
	resp = nextResponse(t, wch)
	tr.Logf("watch t/: %s", tr.events(resp.Events))
	expect(t, len(resp.Events) == 3, "one response with three deletes")
}

func scenarioWatchProgress(t *testing.T, e Env, tr *Transcript) {
	ctx := timeout(t)
	wch := e.Client.Watch(ctx, "pg", clientv3.WithProgressNotify(), clientv3.WithCreatedNotify())
	created(t, tr, "watch pg", wch)
	put(t, e, tr, "put pg", "pg", "1")
	evs := collect(t, wch, 1)
	tr.Logf("watch pg: %s", tr.events(evs))
	put(t, e, tr, "put other", "other", "1")
	must(t, e.Client.RequestProgress(ctx))
	resp := nextResponse(t, wch)
	// Only that a progress notification comes, and not behind the last
	// event; its exact revision may differ.
	ok := resp.IsProgressNotify() && resp.Header.Revision >= evs[0].Kv.ModRevision
	tr.Logf("progress notify after request: %t", ok)
	expect(t, ok, "a progress notification at or after the last event (got progress %t, rev %d)", resp.IsProgressNotify(), resp.Header.Revision)
	put(t, e, tr, "put pg", "pg", "2")
	tr.Logf("watch pg: %s", tr.events(collect(t, wch, 1)))
}

func scenarioWatchMany(t *testing.T, e Env, tr *Transcript) {
	const n = 40
	var prefix, single []clientv3.WatchChan
	for i := range n {
		prefix = append(prefix, e.Client.Watch(timeout(t), "m/", clientv3.WithPrefix(), clientv3.WithCreatedNotify()))
		single = append(single, e.Client.Watch(timeout(t), fmt.Sprintf("m/%02d", i), clientv3.WithCreatedNotify()))
	}
	for i := range n {
		awaitCreated(t, prefix[i])
		awaitCreated(t, single[i])
	}
	tr.Logf("%d prefix and %d single-key watchers created", n, n)
	txn(t, e, tr, "txn put m/00..m/09", nil, func() []clientv3.Op {
		var ops []clientv3.Op
		for i := range 10 {
			ops = append(ops, clientv3.OpPut(fmt.Sprintf("m/%02d", i), "1"))
		}
		return ops
	}(), nil)
	for i := range n {
		put(t, e, tr, fmt.Sprintf("put m/%02d", i), fmt.Sprintf("m/%02d", i), "2")
	}
	var first string
	for i, wch := range prefix {
		got := tr.events(collect(t, wch, 10+n))
		if i == 0 {
			first = got
			tr.Logf("prefix watcher: %s", got)
		}
		expect(t, got == first, "prefix watcher %d saw %s, watcher 0 saw %s", i, got, first)
	}
	for i, wch := range single {
		k := 1
		if i < 10 {
			k = 2
		}
		got := collect(t, wch, k)
		tr.Logf("watcher m/%02d: %s", i, tr.events(got))
	}
}

func scenarioWatchRequireLeader(t *testing.T, e Env, tr *Transcript) {
	if e.LoseLeader == nil {
		t.Skip("backend cannot lose its leader")
	}
	ctx := timeout(t)
	rl := e.Client.Watch(clientv3.WithRequireLeader(ctx), "rl", clientv3.WithCreatedNotify())
	plain := e.Client.Watch(ctx, "rl", clientv3.WithCreatedNotify())
	created(t, tr, "require-leader watch", rl)
	created(t, tr, "plain watch", plain)
	put(t, e, tr, "put rl=1", "rl", "1")
	tr.Logf("require-leader watch: %s", tr.events(collect(t, rl, 1)))
	tr.Logf("plain watch: %s", tr.events(collect(t, plain, 1)))

	restore := e.LoseLeader()
	restored := false
	defer func() {
		if !restored {
			restore()
		}
	}()
	resps := closedAfter(t, rl)
	var last error
	for _, r := range resps {
		tr.Logf("require-leader watch: canceled=%t err=%s events=%d", r.Canceled, tr.Err(r.Err()), len(r.Events))
		last = r.Err()
	}
	tr.Logf("require-leader watch closed")
	expectErr(t, last, rpctypes.ErrNoLeader, "require-leader watch without a leader")
	// A write without a leader fails; the fake should not accept it either,
	// but how long it takes to fail is not compared.
	wctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), time.Second)
	_, err := e.Client.Put(wctx, "rl", "lost")
	cancel()
	tr.Logf("require-leader put without leader: %s", tr.Err(err))
	expect(t, err != nil, "put without a leader fails")

	restore()
	restored = true
	put(t, e, tr, "put rl=2", "rl", "2")
	tr.Logf("plain watch after restore: %s", tr.events(collect(t, plain, 1)))
	// On a stream of its own: clientv3 puts watches with the same outgoing
	// metadata on one gRPC stream, and until the client has dropped the
	// stream that ended with "no leader", a watch put on it ends at once
	// with that error. A real etcd takes long enough to elect a leader that
	// the stream is gone by then; the fake restores its leader at once, so
	// sharing the stream made this scenario fail about one run in two.
	fresh := metadata.AppendToOutgoingContext(ctx, "baton-conformance-stream", "after-restore")
	rl = e.Client.Watch(clientv3.WithRequireLeader(fresh), "rl", clientv3.WithRev(tr.AbsRev(1)))
	tr.Logf("new require-leader watch: %s", tr.events(collect(t, rl, 2)))
}

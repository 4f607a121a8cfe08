package etcdconformance

import (
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

func txnScenarios() []Scenario {
	return []Scenario{
		{Name: "txn-compare", Run: scenarioTxnCompare},
		{Name: "txn-responses", Run: scenarioTxnResponses},
		{Name: "txn-duplicate-key", Run: scenarioTxnDuplicate},
		{Name: "txn-limits", Run: scenarioTxnLimits},
	}
}

// txnResp formats a transaction response: succeeded, header revision and each
// op's response, nested transactions recursively.
func (tr *Transcript) txnResp(resp *clientv3.TxnResponse) string {
	return tr.pbTxn((*pb.TxnResponse)(resp))
}

func (tr *Transcript) pbTxn(resp *pb.TxnResponse) string {
	ops := make([]string, len(resp.Responses))
	for i, op := range resp.Responses {
		switch r := op.Response.(type) {
		case *pb.ResponseOp_ResponseRange:
			rr := r.ResponseRange
			ops[i] = fmt.Sprintf("get(%s count=%d more=%t kvs=%s)", tr.header(rr.Header), rr.Count, rr.More, tr.kvs(rr.Kvs))
		case *pb.ResponseOp_ResponsePut:
			ops[i] = fmt.Sprintf("put(%s prev=%s)", tr.header(r.ResponsePut.Header), tr.kv(r.ResponsePut.PrevKv))
		case *pb.ResponseOp_ResponseDeleteRange:
			rd := r.ResponseDeleteRange
			ops[i] = fmt.Sprintf("delete(%s deleted=%d prev=%s)", tr.header(rd.Header), rd.Deleted, tr.kvs(rd.PrevKvs))
		case *pb.ResponseOp_ResponseTxn:
			ops[i] = "txn(" + tr.pbTxn(r.ResponseTxn) + ")"
		default:
			ops[i] = fmt.Sprintf("unknown(%T)", op.Response)
		}
	}
	return fmt.Sprintf("succeeded=%t %s ops=[%s]", resp.Succeeded, tr.header(resp.Header), strings.Join(ops, " "))
}

// header formats a response header's revision; nested responses may have
// none.
func (tr *Transcript) header(h *pb.ResponseHeader) string {
	if h == nil {
		return "rev=nil"
	}
	return "rev=" + tr.Rev(h.Revision)
}

// txn commits a transaction and records its response or error.
func txn(t *testing.T, e Env, tr *Transcript, label string, cmps []clientv3.Cmp, then, els []clientv3.Op) (*clientv3.TxnResponse, error) {
	t.Helper()
	resp, err := e.Client.Txn(timeout(t)).If(cmps...).Then(then...).Else(els...).Commit()
	if err != nil {
		tr.Logf("%s: %s", label, tr.Err(err))
		return nil, err
	}
	tr.Logf("%s: %s", label, tr.txnResp(resp))
	return resp, nil
}

func scenarioTxnCompare(t *testing.T, e Env, tr *Transcript) {
	ctx := timeout(t)
	l, err := e.Client.Grant(ctx, 60)
	must(t, err)
	tr.Logf("grant: %s", tr.Lease(l.ID))
	put(t, e, tr, "put a=1 lease", "a", "1", clientv3.WithLease(l.ID)) // @1
	put(t, e, tr, "put b=2", "b", "2")                                 // @2
	put(t, e, tr, "put b=2 again", "b", "2")                           // @3
	put(t, e, tr, "put p/1=x", "p/1", "x")                             // @4
	put(t, e, tr, "put p/2=y", "p/2", "y")                             // @5
	abs := tr.AbsRev
	cases := []struct {
		name string
		cmps []clientv3.Cmp
		want bool
	}{
		{"value a = 1", []clientv3.Cmp{clientv3.Compare(clientv3.Value("a"), "=", "1")}, true},
		{"value a != 1", []clientv3.Cmp{clientv3.Compare(clientv3.Value("a"), "!=", "1")}, false},
		{"value a < 2", []clientv3.Cmp{clientv3.Compare(clientv3.Value("a"), "<", "2")}, true},
		{"value a > 0", []clientv3.Cmp{clientv3.Compare(clientv3.Value("a"), ">", "0")}, true},
		{"value a > 10", []clientv3.Cmp{clientv3.Compare(clientv3.Value("a"), ">", "10")}, false},
		{"value missing = empty", []clientv3.Cmp{clientv3.Compare(clientv3.Value("m"), "=", "")}, false},
		{"value missing != x", []clientv3.Cmp{clientv3.Compare(clientv3.Value("m"), "!=", "x")}, false},
		{"version missing = 0", []clientv3.Cmp{clientv3.Compare(clientv3.Version("m"), "=", 0)}, true},
		{"create missing = 0", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("m"), "=", 0)}, true},
		{"mod missing < @1", []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision("m"), "<", abs(1))}, true},
		{"lease missing = 0", []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue("m"), "=", clientv3.NoLease)}, true},
		{"version b = 2", []clientv3.Cmp{clientv3.Compare(clientv3.Version("b"), "=", 2)}, true},
		{"version b > 1", []clientv3.Cmp{clientv3.Compare(clientv3.Version("b"), ">", 1)}, true},
		{"version b < 2", []clientv3.Cmp{clientv3.Compare(clientv3.Version("b"), "<", 2)}, false},
		{"version b != 2", []clientv3.Cmp{clientv3.Compare(clientv3.Version("b"), "!=", 2)}, false},
		{"create a = @1", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("a"), "=", abs(1))}, true},
		{"create b = @3", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("b"), "=", abs(3))}, false},
		{"mod b = @3", []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision("b"), "=", abs(3))}, true},
		{"mod b > @2", []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision("b"), ">", abs(2))}, true},
		{"lease a = L1", []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue("a"), "=", l.ID)}, true},
		{"lease a != L1", []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue("a"), "!=", l.ID)}, false},
		{"lease b = 0", []clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue("b"), "=", clientv3.NoLease)}, true},
		{"prefix p/ value = x", []clientv3.Cmp{clientv3.Compare(clientv3.Value("p/"), "=", "x").WithPrefix()}, false},
		{"prefix p/ value > a", []clientv3.Cmp{clientv3.Compare(clientv3.Value("p/"), ">", "a").WithPrefix()}, true},
		{"prefix p/ version = 1", []clientv3.Cmp{clientv3.Compare(clientv3.Version("p/"), "=", 1).WithPrefix()}, true},
		{"prefix p/ mod < @5", []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision("p/"), "<", abs(5)).WithPrefix()}, false},
		{"prefix p/ create > @3", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("p/"), ">", abs(3)).WithPrefix()}, true},
		{"prefix q/ version = 0", []clientv3.Cmp{clientv3.Compare(clientv3.Version("q/"), "=", 0).WithPrefix()}, true},
		{"prefix q/ value = empty", []clientv3.Cmp{clientv3.Compare(clientv3.Value("q/"), "=", "").WithPrefix()}, false},
		{"range a..c create > 0", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision("a").WithRange("c"), ">", 0)}, true},
		{"range a..c version = 1", []clientv3.Cmp{clientv3.Compare(clientv3.Version("a").WithRange("c"), "=", 1)}, false},
		{"range b..p/2 version > 0", []clientv3.Cmp{clientv3.Compare(clientv3.Version("b").WithRange("p/2"), ">", 0)}, true},
		{"two cmps true", []clientv3.Cmp{
			clientv3.Compare(clientv3.Value("a"), "=", "1"),
			clientv3.Compare(clientv3.Version("b"), "=", 2),
		}, true},
		{"two cmps one false", []clientv3.Cmp{
			clientv3.Compare(clientv3.Value("a"), "=", "1"),
			clientv3.Compare(clientv3.Version("b"), "=", 3),
		}, false},
		{"no cmps", nil, true},
	}
	for _, c := range cases {
		resp, err := e.Client.Txn(ctx).If(c.cmps...).Then(clientv3.OpGet("a")).Else(clientv3.OpGet("b")).Commit()
		if err != nil {
			tr.Logf("%s: %s", c.name, tr.Err(err))
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		tr.Logf("%s: succeeded=%t rev=%s", c.name, resp.Succeeded, tr.Rev(resp.Header.Revision))
		expect(t, resp.Succeeded == c.want, "%s: succeeded=%t, want %t", c.name, resp.Succeeded, c.want)
	}
	_, err = e.Client.Txn(ctx).If(clientv3.Compare(clientv3.Value(""), "=", "")).Commit()
	tr.Logf("compare on empty key: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrEmptyKey, "compare on an empty key")
}

func scenarioTxnResponses(t *testing.T, e Env, tr *Transcript) {
	put(t, e, tr, "put k=0", "k", "0")
	put(t, e, tr, "put d=0", "d", "0")
	resp, _ := txn(t, e, tr, "else branch",
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value("k"), "=", "none")},
		[]clientv3.Op{clientv3.OpPut("then", "x")},
		[]clientv3.Op{
			clientv3.OpGet("k"),
			clientv3.OpPut("k", "1", clientv3.WithPrevKV()),
			clientv3.OpGet("k"),
			clientv3.OpPut("n", "1"),
			clientv3.OpDelete("d", clientv3.WithPrevKV()),
			clientv3.OpGet("", clientv3.WithFromKey(), clientv3.WithKeysOnly()),
		})
	expect(t, resp != nil && !resp.Succeeded && resp.Header.Revision == tr.AbsRev(3) && len(resp.Responses) == 6,
		"else branch: not succeeded, three writes in one revision @3")
	if resp != nil && len(resp.Responses) == 6 {
		after := resp.Responses[2].GetResponseRange()
		expect(t, after != nil && len(after.Kvs) == 1 && string(after.Kvs[0].Value) == "1", "a get after a put in one txn sees the put")
	}
	get(t, e, tr, "get then", "then")
	get(t, e, tr, "get k", "k")
	get(t, e, tr, "get n", "n")

	resp, _ = txn(t, e, tr, "read-only txn", nil, []clientv3.Op{clientv3.OpGet("k"), clientv3.OpGet("missing")}, nil)
	expect(t, resp != nil && resp.Succeeded && resp.Header.Revision == tr.AbsRev(3), "a read-only txn keeps the revision")
	resp, _ = txn(t, e, tr, "empty txn", nil, nil, nil)
	expect(t, resp != nil && resp.Succeeded && resp.Header.Revision == tr.AbsRev(3), "an empty txn keeps the revision")
	resp, _ = txn(t, e, tr, "failed txn no else", []clientv3.Cmp{clientv3.Compare(clientv3.Version("k"), "=", 0)}, []clientv3.Op{clientv3.OpPut("k", "x")}, nil)
	expect(t, resp != nil && !resp.Succeeded && len(resp.Responses) == 0, "a failed txn without else does nothing")
	resp, _ = txn(t, e, tr, "delete missing in txn", nil, []clientv3.Op{clientv3.OpDelete("missing")}, nil)
	expect(t, resp != nil && resp.Header.Revision == tr.AbsRev(3), "deleting nothing in a txn keeps the revision")

	resp, _ = txn(t, e, tr, "nested",
		[]clientv3.Cmp{clientv3.Compare(clientv3.Version("k"), ">", 0)},
		[]clientv3.Op{
			clientv3.OpPut("outer", "1"),
			clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.Value("outer"), "=", "1")},
				[]clientv3.Op{clientv3.OpPut("inner-then", "1"), clientv3.OpGet("outer")},
				[]clientv3.Op{clientv3.OpPut("inner-else", "1")}),
			clientv3.OpTxn(
				[]clientv3.Cmp{clientv3.Compare(clientv3.Value("k"), "=", "0")},
				[]clientv3.Op{clientv3.OpPut("inner2-then", "1")},
				[]clientv3.Op{clientv3.OpGet("k"), clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpDelete("n", clientv3.WithPrevKV())}, nil)}),
		}, nil)
	if resp != nil && len(resp.Responses) == 3 {
		in := resp.Responses[1].GetResponseTxn()
		in2 := resp.Responses[2].GetResponseTxn()
		// etcd evaluates every compare of a txn, nested ones too, before
		// it applies any op.
		expect(t, in != nil && !in.Succeeded, "a nested compare does not see the outer txn's earlier put")
		expect(t, in2 != nil && !in2.Succeeded, "second nested txn takes its else branch")
		expect(t, resp.Header.Revision == tr.AbsRev(4), "a nested txn's writes share the outer revision")
	} else {
		t.Errorf("nested txn: got %v", resp)
	}
	get(t, e, tr, "after nested", "", clientv3.WithFromKey())
}

func scenarioTxnDuplicate(t *testing.T, e Env, tr *Transcript) {
	put(t, e, tr, "put a", "a", "0")
	put(t, e, tr, "put c", "c", "0")
	put(t, e, tr, "put p/1", "p/1", "0")
	opPut, opDel, opGet := clientv3.OpPut, clientv3.OpDelete, clientv3.OpGet
	sub := func(then, els []clientv3.Op) clientv3.Op { return clientv3.OpTxn(nil, then, els) }
	ops := func(o ...clientv3.Op) []clientv3.Op { return o }
	cases := []struct {
		name      string
		then, els []clientv3.Op
		dup       bool
	}{
		{"put a, put a", ops(opPut("a", "1"), opPut("a", "2")), nil, true},
		{"put a, delete a", ops(opPut("a", "1"), opDel("a")), nil, true},
		{"delete a, put a", ops(opDel("a"), opPut("a", "1")), nil, true},
		{"delete b..d, put c", ops(opDel("b", clientv3.WithRange("d")), opPut("c", "1")), nil, true},
		{"delete prefix p/, put p/x", ops(opDel("p/", clientv3.WithPrefix()), opPut("p/x", "1")), nil, true},
		{"delete a, delete a", ops(opDel("a"), opDel("a")), nil, false},
		{"delete prefix p/, delete p/1", ops(opDel("p/", clientv3.WithPrefix()), opDel("p/1")), nil, false},
		{"get a, put a", ops(opGet("a"), opPut("a", "1")), nil, false},
		{"then put a, else put a", ops(opPut("a", "1")), ops(opPut("a", "2")), false},
		{"then ok, else put a twice", ops(opPut("c", "1")), ops(opPut("a", "1"), opPut("a", "2")), true},
		{"put a, nested put a", ops(opPut("a", "1"), sub(ops(opPut("a", "2")), nil)), nil, true},
		{"nested then put a, nested else put a", ops(sub(ops(opPut("a", "1")), ops(opPut("a", "2")))), nil, false},
		{"two nested put a", ops(sub(ops(opPut("a", "1")), nil), sub(ops(opPut("a", "2")), nil)), nil, true},
		{"delete a, nested put a", ops(opDel("a"), sub(ops(opPut("a", "1")), nil)), nil, true},
		{"nested delete a, put a", ops(sub(ops(opDel("a")), nil), opPut("a", "1")), nil, true},
		{"nested delete a, nested put a", ops(sub(ops(opDel("a")), nil), sub(ops(opPut("a", "1")), nil)), nil, true},
		{"nested put a, nested delete a", ops(sub(ops(opPut("a", "1")), nil), sub(ops(opDel("a")), nil)), nil, false},
		{"nested put a twice", ops(sub(ops(opPut("a", "1"), opPut("a", "2")), nil)), nil, true},
		{"nested else put a, put a", ops(sub(nil, ops(opPut("a", "1"))), opPut("a", "2")), nil, true},
	}
	for _, c := range cases {
		resp, err := txn(t, e, tr, c.name, nil, c.then, c.els)
		if c.dup {
			expectErr(t, err, rpctypes.ErrDuplicateKey, c.name)
		} else {
			expect(t, err == nil && resp.Succeeded, "%s: succeeds, got %v", c.name, err)
		}
	}
	get(t, e, tr, "after", "", clientv3.WithFromKey())
}

func scenarioTxnLimits(t *testing.T, e Env, tr *Transcript) {
	puts := func(n int) []clientv3.Op {
		ops := make([]clientv3.Op, n)
		for i := range ops {
			ops[i] = clientv3.OpPut(fmt.Sprintf("k%03d", i), "v")
		}
		return ops
	}
	gets := func(n int) []clientv3.Op {
		ops := make([]clientv3.Op, n)
		for i := range ops {
			ops[i] = clientv3.OpGet("k000")
		}
		return ops
	}
	cmps := func(n int) []clientv3.Cmp {
		c := make([]clientv3.Cmp, n)
		for i := range c {
			c[i] = clientv3.Compare(clientv3.Version(fmt.Sprintf("k%03d", i)), "=", 0)
		}
		return c
	}
	record := func(label string, cs []clientv3.Cmp, then, els []clientv3.Op) error {
		resp, err := e.Client.Txn(timeout(t)).If(cs...).Then(then...).Else(els...).Commit()
		if err != nil {
			tr.Logf("%s: %s", label, tr.Err(err))
			return err
		}
		tr.Logf("%s: succeeded=%t rev=%s ops=%d", label, resp.Succeeded, tr.Rev(resp.Header.Revision), len(resp.Responses))
		return nil
	}
	must(t, record("128 puts", nil, puts(128), nil))
	expectErr(t, record("129 puts", nil, puts(129), nil), rpctypes.ErrTooManyOps, "129 puts")
	expectErr(t, record("129 else ops", cmps(1), nil, gets(129)), rpctypes.ErrTooManyOps, "129 else ops")
	must(t, record("128 compares", cmps(128), nil, nil))
	expectErr(t, record("129 compares", cmps(129), nil, nil), rpctypes.ErrTooManyOps, "129 compares")
	// A nested txn may use what its parent level leaves of the limit: 128
	// minus the widest of the parent's compares, then and else.
	must(t, record("2 ops + nested 126", nil, []clientv3.Op{clientv3.OpGet("a"), clientv3.OpTxn(nil, gets(126), nil)}, nil))
	expectErr(t, record("2 ops + nested 127", nil, []clientv3.Op{clientv3.OpGet("a"), clientv3.OpTxn(nil, gets(127), nil)}, nil), rpctypes.ErrTooManyOps, "nested 127")
	expectErr(t, record("3 cmps, 1 op + nested 126", cmps(3), []clientv3.Op{clientv3.OpTxn(nil, gets(126), nil)}, nil), rpctypes.ErrTooManyOps, "nested after 3 compares")
	must(t, record("1 op + nested 127 compares", nil, []clientv3.Op{clientv3.OpTxn(cmps(127), nil, nil)}, nil))
	must(t, record("64 nested of 64", nil, nestedGets(64, 64), nil))

	// Request size: etcd refuses a request whose raft entry exceeds
	// max-request-bytes (1.5 MiB by default and in the integration
	// framework); the client refuses to send more than 2 MiB.
	const mib = 1 << 20
	_, err := e.Client.Put(timeout(t), "big", strings.Repeat("x", mib))
	tr.Logf("put 1 MiB: %s", tr.Err(err))
	must(t, err)
	_, err = e.Client.Put(timeout(t), "big", strings.Repeat("x", 3*mib/2))
	tr.Logf("put 1.5 MiB: %s", tr.Err(err))
	expectErr(t, err, rpctypes.ErrRequestTooLarge, "put 1.5 MiB")
	err = record("txn 2 x 0.8 MiB", nil, []clientv3.Op{
		clientv3.OpPut("big1", strings.Repeat("x", 8*mib/10)),
		clientv3.OpPut("big2", strings.Repeat("x", 8*mib/10)),
	}, nil)
	expectErr(t, err, rpctypes.ErrRequestTooLarge, "txn of 1.6 MiB")
	_, err = e.Client.Put(timeout(t), "big", strings.Repeat("x", 3*mib))
	tr.Logf("put 3 MiB: %s", tr.Err(err))
	expect(t, err != nil, "put 3 MiB fails")

	// A put on a lease that does not exist fails the whole txn, but only on
	// the branch taken.
	bad := clientv3.WithLease(unknownLease)
	err = record("then put unknown lease", nil, []clientv3.Op{clientv3.OpPut("ok", "1"), clientv3.OpPut("l", "1", bad)}, nil)
	expectErr(t, err, rpctypes.ErrLeaseNotFound, "txn put with an unknown lease")
	err = record("else put unknown lease, then taken", nil, []clientv3.Op{clientv3.OpPut("ok", "1")}, []clientv3.Op{clientv3.OpPut("l", "1", bad)})
	must(t, err)
	err = record("nested put unknown lease", nil, []clientv3.Op{clientv3.OpTxn(nil, []clientv3.Op{clientv3.OpPut("l", "1", bad)}, nil)}, nil)
	expectErr(t, err, rpctypes.ErrLeaseNotFound, "nested txn put with an unknown lease")
	get(t, e, tr, "keys ok, l", "ok")
	get(t, e, tr, "keys l", "l")
}

// nestedGets is outer Then ops, each a txn of inner gets.
func nestedGets(outer, inner int) []clientv3.Op {
	ops := make([]clientv3.Op, outer)
	for i := range ops {
		in := make([]clientv3.Op, inner)
		for j := range in {
			in[j] = clientv3.OpGet("a")
		}
		ops[i] = clientv3.OpTxn(nil, in, nil)
	}
	return ops
}

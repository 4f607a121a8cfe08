package embedded_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/internal/embedded"
)

// BenchmarkHandoffProtocol measures the floor of a planned handoff's gap
// under two protocols, on the embedded etcd, with the old and the new
// owner on clients of their own and each side's writes batched into one
// Txn of nested guarded ops, as Baton's workers batch them:
//
//   - two-write (Baton's protocol): the old owner deletes the owner keys
//     (each guarded by its token, the create revision); the new owner,
//     watching, claims each deleted key (create if absent, on its lease).
//     The gap ends when the claim's answer arrives.
//   - one-write (issue 13's candidate): the old owner writes each owner key
//     over to the new owner's lease in one guarded put (the token would be
//     the key's mod revision); the new owner, watching, owns a key as soon
//     as the put's event arrives. The gap ends there.
//
// The gap starts when the old owner sends its Txn (its work has stopped).
// It reports the p50 and p99 of the per-sync gap (ms).
//
//	go test ./internal/embedded -run '^$' -bench HandoffProtocol -count 5
func BenchmarkHandoffProtocol(b *testing.B) {
	for _, fsync := range []bool{true, false} {
		for _, moves := range []int{9, 90} {
			for _, proto := range []string{"two-write", "one-write"} {
				b.Run(fmt.Sprintf("fsync=%v/moves=%d/%s", fsync, moves, proto), func(b *testing.B) {
					benchHandoff(b, fsync, moves, proto == "one-write")
				})
			}
		}
	}
}

func benchHandoff(b *testing.B, fsync bool, moves int, oneWrite bool) {
	var opts []embedded.Option
	if !fsync {
		opts = append(opts, embedded.WithUnsafeNoFsync())
	}
	srv, err := embedded.Start(b.TempDir(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	client := func() *clientv3.Client {
		cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 2 * time.Second})
		if err != nil {
			b.Fatal(err)
		}
		return cli
	}
	oldCli, newCli := client(), client()
	defer oldCli.Close()
	defer newCli.Close()
	ctx := context.Background()
	grant := func(cli *clientv3.Client) clientv3.LeaseID {
		l, err := cli.Grant(ctx, 60)
		if err != nil {
			b.Fatal(err)
		}
		return l.ID
	}
	oldLease, newLease := grant(oldCli), grant(newCli)

	var gaps []time.Duration
	b.ResetTimer()
	for n := 0; n < b.N; n += moves {
		b.StopTimer()
		prefix := fmt.Sprintf("/bench/h%d/owners/", n)
		// The old owner holds every key; the new owner watches.
		tokens := map[string]int64{}
		for i := range moves {
			key := fmt.Sprintf("%s%03d", prefix, i)
			resp, err := oldCli.Put(ctx, key, "old", clientv3.WithLease(oldLease))
			if err != nil {
				b.Fatal(err)
			}
			tokens[key] = resp.Header.Revision
		}
		wctx, cancel := context.WithCancel(ctx)
		wch := newCli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		<-wch // created
		b.StartTimer()

		start := time.Now()
		ops := make([]clientv3.Op, 0, moves)
		for key, token := range tokens {
			if oneWrite {
				ops = append(ops, clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(key), "=", token)},
					[]clientv3.Op{clientv3.OpPut(key, "new", clientv3.WithLease(newLease))}, nil))
			} else {
				ops = append(ops, clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", token)},
					[]clientv3.Op{clientv3.OpDelete(key)}, nil))
			}
		}
		released := make(chan error, 1)
		go func() {
			_, err := oldCli.Txn(ctx).Then(ops...).Commit()
			released <- err
		}()
		owned := 0
		for owned < moves {
			wr, ok := <-wch
			if !ok || wr.Err() != nil {
				b.Fatalf("watch: %v", wr.Err())
			}
			var claim []clientv3.Op
			for _, ev := range wr.Events {
				key := string(ev.Kv.Key)
				switch {
				case oneWrite && ev.Type == mvccpb.PUT && string(ev.Kv.Value) == "new":
					gaps = append(gaps, time.Since(start))
					owned++
				case !oneWrite && ev.Type == mvccpb.DELETE:
					claim = append(claim, clientv3.OpTxn(
						[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
						[]clientv3.Op{clientv3.OpPut(key, "new", clientv3.WithLease(newLease))}, nil))
				}
			}
			if len(claim) > 0 {
				resp, err := newCli.Txn(ctx).Then(claim...).Commit()
				took := time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				for _, r := range resp.Responses {
					if !r.GetResponseTxn().Succeeded {
						b.Fatal("a claim failed")
					}
					gaps = append(gaps, took)
					owned++
				}
			}
		}
		if err := <-released; err != nil {
			b.Fatal(err)
		}
		cancel()
		b.StopTimer()
		if _, err := oldCli.Delete(ctx, strings.TrimSuffix(prefix, "/"), clientv3.WithPrefix()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(gaps)
	ms := func(q float64) float64 { return float64(gaps[int(q*float64(len(gaps)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

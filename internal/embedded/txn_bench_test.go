package embedded_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/baton-go/baton/internal/embedded"
)

// BenchmarkGuardedPut measures the floor under Baton's handoff gap: the
// latency of one guarded create (the shape of a claim and, as a delete, of
// a release) on the embedded etcd the benchmarks use, alone and in bursts
// of concurrent writers. A planned handoff is two such writes in sequence
// (the old owner's release, then the new owner's claim) plus a watch event,
// so a burst's write latency bounds the gap of every sync moved in it.
//
//	go test ./internal/embedded -run '^$' -bench GuardedPut -count 5
//
// It reports the p50 and p99 of one write's latency (ms) for each burst
// size; ns/op is the burst's wall time divided by its writes. The nested
// cases put n guarded creates in one Txn, as a worker's batched claims and
// releases do: ns/op is then per nested create.
func BenchmarkGuardedPut(b *testing.B) {
	for _, fsync := range []bool{true, false} {
		for _, burst := range []int{1, 10, 40} {
			b.Run(fmt.Sprintf("fsync=%v/burst=%d", fsync, burst), func(b *testing.B) {
				benchGuardedPut(b, fsync, burst, 1)
			})
		}
		for _, nested := range []int{9, 90} {
			b.Run(fmt.Sprintf("fsync=%v/nested=%d", fsync, nested), func(b *testing.B) {
				benchGuardedPut(b, fsync, 1, nested)
			})
		}
	}
}

func benchGuardedPut(b *testing.B, fsync bool, burst, nested int) {
	var opts []embedded.Option
	if !fsync {
		opts = append(opts, embedded.WithUnsafeNoFsync())
	}
	srv, err := embedded.Start(b.TempDir(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: srv.Endpoints(), DialTimeout: 2 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()

	var mu sync.Mutex
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for n := 0; n < b.N; n += burst * nested {
		var wg sync.WaitGroup
		for i := range burst {
			ops := make([]clientv3.Op, nested)
			for j := range ops {
				key := fmt.Sprintf("/bench/owners/%d", n+i*nested+j)
				ops[j] = clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)},
					[]clientv3.Op{clientv3.OpPut(key, "m")}, nil)
			}
			wg.Go(func() {
				start := time.Now()
				resp, err := cli.Txn(ctx).Then(ops...).Commit()
				took := time.Since(start)
				if err == nil {
					for _, r := range resp.Responses {
						if !r.GetResponseTxn().Succeeded {
							err = fmt.Errorf("a key was taken")
						}
					}
				}
				if err != nil {
					b.Errorf("guarded puts: %v", err)
					return
				}
				mu.Lock()
				lat = append(lat, took)
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	b.StopTimer()
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	ms := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))]) / float64(time.Millisecond) }
	b.ReportMetric(ms(0.5), "p50-ms")
	b.ReportMetric(ms(0.99), "p99-ms")
}

package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/baton-go/baton/internal/embedded"
	"github.com/baton-go/baton/internal/keys"
)

// etcdEnv is the etcd every scenario runs against: an embedded server in a
// temporary directory, or a cluster given by -endpoints.
type etcdEnv struct {
	endpoints []string
	srv       *embedded.Server
	dir       string
	fsync     bool
	admin     *clientv3.Client // writes syncs and cleans up; not counted
}

func startEtcd(endpoints string, fsync bool) (*etcdEnv, error) {
	e := &etcdEnv{fsync: fsync}
	if endpoints != "" {
		e.endpoints = strings.Split(endpoints, ",")
	} else {
		dir, err := os.MkdirTemp("", "baton-bench-")
		if err != nil {
			return nil, err
		}
		e.dir = dir
		opts := []embedded.Option{}
		if !fsync {
			opts = append(opts, embedded.WithUnsafeNoFsync())
		}
		srv, err := embedded.Start(dir, opts...)
		if err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		e.srv = srv
		e.endpoints = srv.Endpoints()
	}
	cli, err := e.client(nil)
	if err != nil {
		e.close()
		return nil, err
	}
	e.admin = cli
	return e, nil
}

func (e *etcdEnv) close() {
	if e.admin != nil {
		e.admin.Close()
	}
	if e.srv != nil {
		e.srv.Close()
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// client dials a new client, counted by cnt when it is not nil. Each member
// gets its own client, as separate processes would.
func (e *etcdEnv) client(cnt *counter) (*clientv3.Client, error) {
	return dialClient(e.endpoints, cnt)
}

func dialClient(endpoints []string, cnt *counter) (*clientv3.Client, error) {
	cfg := clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		// clientv3 logs every failed retry of a crashed member's client.
		Logger: zap.NewNop(),
	}
	if cnt != nil {
		cfg.DialOptions = cnt.dialOptions()
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("dial etcd %v: %w", endpoints, err)
	}
	return cli, nil
}

// serverCounters are the etcd server's own counters, read from its /metrics
// endpoint (the first endpoint's only, on a real cluster).
type serverCounters struct {
	Proposals float64 `json:"proposals_committed"` // raft entries committed: one per write request
	WALBytes  float64 `json:"wal_bytes"`           // bytes appended to the write-ahead log
	Fsyncs    float64 `json:"wal_fsyncs"`          // WAL fsync calls (counted even with fsync off)
	Puts      float64 `json:"mvcc_puts"`           // keys put (a Txn may put many)
	Deletes   float64 `json:"mvcc_deletes"`        // delete operations
	Ranges    float64 `json:"mvcc_ranges"`         // range reads
}

var serverMetricNames = map[string]func(*serverCounters) *float64{
	"etcd_server_proposals_committed_total":      func(s *serverCounters) *float64 { return &s.Proposals },
	"etcd_disk_wal_write_bytes_total":            func(s *serverCounters) *float64 { return &s.WALBytes },
	"etcd_disk_wal_fsync_duration_seconds_count": func(s *serverCounters) *float64 { return &s.Fsyncs },
	"etcd_mvcc_put_total":                        func(s *serverCounters) *float64 { return &s.Puts },
	"etcd_mvcc_delete_total":                     func(s *serverCounters) *float64 { return &s.Deletes },
	"etcd_mvcc_range_total":                      func(s *serverCounters) *float64 { return &s.Ranges },
}

func (e *etcdEnv) serverCounters() serverCounters {
	var out serverCounters
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(strings.TrimSuffix(e.endpoints[0], "/") + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if f := serverMetricNames[name]; f != nil {
			if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				*f(&out) = v
			}
		}
	}
	return out
}

func (s serverCounters) sub(o serverCounters) serverCounters {
	return serverCounters{
		Proposals: s.Proposals - o.Proposals,
		WALBytes:  s.WALBytes - o.WALBytes,
		Fsyncs:    s.Fsyncs - o.Fsyncs,
		Puts:      s.Puts - o.Puts,
		Deletes:   s.Deletes - o.Deletes,
		Ranges:    s.Ranges - o.Ranges,
	}
}

// syncID names sync i of a scenario.
func syncID(i int) string { return fmt.Sprintf("sync-%05d", i) }

func syncIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = syncID(i)
	}
	return out
}

// putSyncs writes n sync specs of group in Txns of 128 puts, in the
// envelope a coordinator.SyncStore writes. Both systems read them from
// there, so they run the same workload.
func (e *etcdEnv) putSyncs(ctx context.Context, group string, n int) error {
	k, err := keys.New(batonPrefix, group)
	if err != nil {
		return err
	}
	ids := syncIDs(n)
	for start := 0; start < n; start += 128 {
		var ops []clientv3.Op
		for _, id := range ids[start:min(start+128, n)] {
			ops = append(ops, clientv3.OpPut(k.Sync(id), fmt.Sprintf(`{"spec":{"table":%q}}`, id)))
		}
		if _, err := e.admin.Txn(ctx).Then(ops...).Commit(); err != nil {
			return fmt.Errorf("put syncs: %w", err)
		}
	}
	return nil
}

// dropGroup revokes every lease that holds a key of group (members that
// were crashed or abandoned, in either system) and deletes its keys, so
// the next scenario starts on a quiet etcd.
func (e *etcdEnv) dropGroup(ctx context.Context, group string) error {
	prefixes := []string{batonPrefix + "/" + group + "/", baselinePrefix + "/" + group + "/"}
	leases := map[int64]bool{}
	for _, p := range prefixes {
		resp, err := e.admin.Get(ctx, p, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			if kv.Lease != 0 {
				leases[kv.Lease] = true
			}
		}
	}
	for id := range leases {
		_, _ = e.admin.Revoke(ctx, clientv3.LeaseID(id))
	}
	for _, p := range prefixes {
		if _, err := e.admin.Delete(ctx, p, clientv3.WithPrefix()); err != nil {
			return err
		}
	}
	return nil
}

package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"github.com/baton-go/baton/internal/benchproc"

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
	child     *exec.Cmd // the embedded etcd's own process, with -etcd-process
	childIn   io.Closer
	dir       string
	fsync     bool
	admin     *clientv3.Client // writes syncs and cleans up; not counted
}

func startEtcd(endpoints string, fsync, separate bool) (*etcdEnv, error) {
	e := &etcdEnv{fsync: fsync}
	switch {
	case endpoints != "":
		e.endpoints = strings.Split(endpoints, ",")
	case separate:
		c, in, eps, err := startEtcdChild(fsync)
		if err != nil {
			return nil, err
		}
		e.child, e.childIn, e.endpoints = c, in, eps
	default:
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
	if e.child != nil {
		// Closing its stdin tells the child to stop and remove its data.
		e.childIn.Close()
		done := make(chan struct{})
		go func() { e.child.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			e.child.Process.Kill()
			<-done
		}
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// client dials a new client, counted by cnt when it is not nil. Each member
// gets its own client, as separate processes would.
// startEtcdChild runs the embedded etcd in a child process (this binary
// with -etcd-mode), so that the members' garbage collection and goroutines
// do not stall it, as they would not in production; the 2 cores are still
// shared.
func startEtcdChild(fsync bool) (*exec.Cmd, io.Closer, []string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, nil, err
	}
	cmd := exec.Command(exe, "-etcd-mode", fmt.Sprintf("-fsync=%v", fsync))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	sc := bufio.NewScanner(out)
	if !sc.Scan() {
		in.Close()
		cmd.Wait()
		return nil, nil, nil, fmt.Errorf("etcd child did not start")
	}
	return cmd, in, strings.Fields(sc.Text()), nil
}

// etcdMain is the child's main with -etcd-mode: it starts the embedded
// etcd in a temporary directory, prints its endpoints on one line, and
// stops and removes the directory when its stdin closes (the parent ended
// or died).
func etcdMain(args []string) error {
	fs := flag.NewFlagSet("etcd-mode", flag.ContinueOnError)
	fsync := fs.Bool("fsync", true, "fsync the WAL and database")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "baton-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var opts []embedded.Option
	if !*fsync {
		opts = append(opts, embedded.WithUnsafeNoFsync())
	}
	srv, err := embedded.Start(dir, opts...)
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Println(strings.Join(srv.Endpoints(), " "))
	_, _ = io.Copy(io.Discard, os.Stdin)
	return nil
}

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
	// Requests counts what etcd's gRPC server received: unary requests and
	// every stream message (keep-alives, watch creates), from every client;
	// KeepAlives the LeaseKeepAlive messages among them.
	Requests   float64            `json:"grpc_requests"`
	KeepAlives float64            `json:"grpc_keepalives"`
	ByMethod   map[string]float64 `json:"grpc_by_method,omitempty"` // Requests by gRPC method
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
	out, _ := e.readServerCounters()
	return out
}

// readServerCounters is serverCounters, failing when etcd's /metrics cannot
// be read.
func (e *etcdEnv) readServerCounters() (serverCounters, error) {
	var out serverCounters
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(strings.TrimSuffix(e.endpoints[0], "/") + "/metrics")
	if err != nil {
		return out, fmt.Errorf("read etcd's metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("read etcd's metrics: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		if labels, ok := strings.CutPrefix(name, "grpc_server_msg_received_total{"); ok {
			if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				out.Requests += v
				method := labelOf(labels, "grpc_method")
				if method == "LeaseKeepAlive" {
					out.KeepAlives += v
				}
				if out.ByMethod == nil {
					out.ByMethod = map[string]float64{}
				}
				out.ByMethod[method] += v
			}
			continue
		}
		if f := serverMetricNames[name]; f != nil {
			if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
				*f(&out) = v
			}
		}
	}
	return out, sc.Err()
}

// labelOf returns the value of label name in a Prometheus text-format
// label list (`a="x",b="y"}`).
func labelOf(labels, name string) string {
	_, rest, ok := strings.Cut(labels, name+`="`)
	if !ok {
		return ""
	}
	v, _, _ := strings.Cut(rest, `"`)
	return v
}

func (s serverCounters) sub(o serverCounters) serverCounters {
	var by map[string]float64
	for k, v := range s.ByMethod {
		if d := v - o.ByMethod[k]; d != 0 {
			if by == nil {
				by = map[string]float64{}
			}
			by[k] = d
		}
	}
	return serverCounters{
		ByMethod:   by,
		Proposals:  s.Proposals - o.Proposals,
		WALBytes:   s.WALBytes - o.WALBytes,
		Fsyncs:     s.Fsyncs - o.Fsyncs,
		Puts:       s.Puts - o.Puts,
		Deletes:    s.Deletes - o.Deletes,
		Ranges:     s.Ranges - o.Ranges,
		Requests:   s.Requests - o.Requests,
		KeepAlives: s.KeepAlives - o.KeepAlives,
	}
}

// syncID names sync i of a scenario, as every system of the comparison
// names its items.
func syncID(i int) string { return benchproc.SyncID(i) }

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
// were crashed or abandoned, in any system) and deletes its keys, so
// the next scenario starts on a quiet etcd.
func (e *etcdEnv) dropGroup(ctx context.Context, group string) error {
	// group/ is dskit's ring (bench/peers).
	prefixes := []string{batonPrefix + "/" + group + "/", baselinePrefix + "/" + group + "/", group + "/"}
	leases := map[int64]bool{}
	for _, p := range prefixes {
		// Not WithKeysOnly: etcd answers that from its index, without
		// the keys' leases.
		resp, err := e.admin.Get(ctx, p, clientv3.WithPrefix())
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

package embedded

import (
	"fmt"
	"net/url"
	"sync"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Server is a running single-node etcd. Its methods are safe for concurrent
// use.
type Server struct {
	etcd      *embed.Etcd
	endpoints []string
	closeOnce sync.Once
}

// Start runs an etcd server with its data in dir (created if missing) and
// returns once it serves clients. The client and peer ports are chosen by the
// kernel on 127.0.0.1.
func Start(dir string, opts ...Option) (*Server, error) {
	o := defaultOptions()
	for _, opt := range opts {
		opt(&o)
	}
	if dir == "" {
		return nil, fmt.Errorf("embedded: empty data directory")
	}

	cfg := embed.NewConfig()
	cfg.Name = "baton-embedded"
	cfg.Dir = dir
	// Port 0 lets the kernel pick free ports; no other process can take
	// them between choosing and listening. Advertising port 0 is harmless
	// for a one-member cluster: no peer ever dials it.
	loopback := url.URL{Scheme: "http", Host: "127.0.0.1:0"}
	cfg.ListenClientUrls = []url.URL{loopback}
	cfg.AdvertiseClientUrls = []url.URL{loopback}
	cfg.ListenPeerUrls = []url.URL{loopback}
	cfg.AdvertisePeerUrls = []url.URL{loopback}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.InitialClusterToken = "baton-embedded"
	cfg.ElectionMs = uint(o.electionTimeout / time.Millisecond)
	cfg.TickMs = max(cfg.ElectionMs/10, 1)
	cfg.UnsafeNoFsync = o.noFsync
	// Let clients send keep-alive pings every second without being told
	// "too many pings" (the server default allows one per 5s).
	cfg.GRPCKeepAliveMinTime = time.Second
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(newSlogCore(o.logger, zapcore.WarnLevel)))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded: start etcd in %s: %w", dir, err)
	}
	timer := time.NewTimer(o.startTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded: etcd stopped while starting: %w", err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("%w (waited %v)", ErrStartTimeout, o.startTimeout)
	}

	s := &Server{etcd: e}
	for _, l := range e.Clients {
		s.endpoints = append(s.endpoints, "http://"+l.Addr().String())
	}
	return s, nil
}

// Endpoints returns the client URLs, for clientv3.Config.Endpoints.
func (s *Server) Endpoints() []string {
	return append([]string(nil), s.endpoints...)
}

// Err reports a fatal error of the running server; it receives nothing while
// the server is healthy.
func (s *Server) Err() <-chan error {
	return s.etcd.Err()
}

// Close stops the server and waits for its goroutines to end. The data
// directory is kept. Calling Close more than once is harmless.
func (s *Server) Close() {
	s.closeOnce.Do(s.etcd.Close)
}

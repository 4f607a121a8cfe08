// Package embedded runs a single-node etcd server inside the current process,
// for example programs, benchmarks and tests that need a real etcd without
// installing one.
//
// # Guarantees
//
// [Start] returns only once the server has been elected leader of its
// one-member cluster and serves clients, so the first request does not race
// the election. The server listens on free loopback ports chosen by the
// kernel; [Server.Endpoints] reports them. [Server.Close] stops the server and
// every goroutine it started.
//
// # Failure model
//
// This is a development server: one member, no TLS, no authentication. Data
// lives in the directory given to [Start] and survives [Server.Close]; a new
// [Start] on the same directory recovers it (on new ports). With
// [WithUnsafeNoFsync] a machine crash may lose recent writes.
package embedded

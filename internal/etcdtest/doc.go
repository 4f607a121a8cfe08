// Package etcdtest starts etcd for Baton's tests: in-process clusters whose
// client connections can be cut ([NewCluster]), a single embedded server
// ([Embedded]) and clusters of real etcd processes that can be killed
// ([StartProcessCluster]). It is imported only by tests and internal test
// programs.
//
// Every package whose tests use it should verify goroutine leaks with
//
//	func TestMain(m *testing.M) {
//		goleak.VerifyTestMain(m, etcdtest.LeakOptions()...)
//	}
//
// # In-process clusters
//
// [NewCluster] uses go.etcd.io/etcd/tests/v3/framework/integration. That
// framework serves each member on unix sockets named relative to the working
// directory, so a test that uses one changes the process's working directory
// to a temporary directory until the test ends. Consequently:
//
//   - A test (or benchmark) that uses a [Cluster] must not call t.Parallel,
//     and must not rely on relative paths after [NewCluster].
//   - Several clusters in one test, or in a test and its subtests, are fine.
//   - [Cluster.Endpoints] are unix socket URLs that only this process can
//     dial; another OS process needs [Embedded] or [StartProcessCluster].
//
// Members use a 10ms heartbeat and a 100ms election timeout, so etcd grants
// lease TTLs down to 1s (its floor is 1.5 × the election timeout).
//
// Logs of the members are dropped; set BATON_ETCD_LOG=1 to see them in the
// test output.
package etcdtest

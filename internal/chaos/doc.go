// Package chaos proves Baton's failure model by injecting faults: randomised
// schedules against in-process etcd clusters (chaos_test.go), members and
// etcd as separate OS processes killed and paused for real (process_test.go),
// and bad input written into etcd by hand (badinput_test.go). What was tested,
// and the results, are in docs/failure-model.md.
//
// The package itself holds only the fenced log: the record that the worker
// program (./worker) keeps of its fenced writes, and that the tests check
// against etcd's own history.
//
// # Running
//
// The short pass (fixed seeds) runs with every go test ./.... The soak runs
// random seeds until its time is up:
//
//	BATON_SOAK=30m go test -run Soak -timeout 0 ./internal/chaos/
//
// A failing schedule prints its seed and the command that runs it again:
//
//	BATON_CHAOS_SEED=<seed> [BATON_CHAOS_EXTRA=3] go test -run 'Chaos/Seed' -v ./internal/chaos/
package chaos

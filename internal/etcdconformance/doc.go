// Package etcdconformance is a differential conformance suite for etcd as
// Baton and etcd's concurrency package use it: it runs the same scenarios
// through a *clientv3.Client against several etcd implementations ([Backend])
// and fails when their normalized transcripts differ ([Check]).
//
// It exists so that a fake etcd (for simulation in virtual time) can be
// trusted: the suite runs against real etcd ([RealEtcd]) and the fake, and
// every observation both record must match. Scenarios also assert the facts
// a correct etcd must show, so a suite that silently records the wrong
// thing fails against real etcd.
//
// # Guarantees
//
// A [Transcript] holds only what two correct etcds must agree on: results,
// error kinds, revisions relative to the scenario's start, lease IDs as
// ordinals. It leaves out IDs, raft terms, wall-clock durations, and how
// watch events are split between responses (beyond events of one revision
// arriving together).
//
// # Failure model
//
// Scenarios run one at a time on a fresh store. A few wait for time to pass
// (lease expiry, keepalive); on a fake in a synctest bubble that wait is
// virtual. Scenarios needing a leader loss are skipped on a backend whose
// [Env.LoseLeader] is nil.
package etcdconformance

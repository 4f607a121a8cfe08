// Package securitytest checks that Baton runs on a locked-down etcd: client
// TLS with certificates, etcd authentication, and one role per group that
// may read and write only that group's prefix. It has only tests; the
// README's security section gives the etcdctl commands they mirror.
package securitytest

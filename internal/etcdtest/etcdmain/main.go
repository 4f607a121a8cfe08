// Command etcdmain is the etcd server, built from the etcd version in go.mod
// for tests that need real etcd processes (see etcdtest.BuildEtcd).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

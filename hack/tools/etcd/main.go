// Command etcd is the etcd server built from its Go module at the version this
// module pins, for envtest and the local control plane.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

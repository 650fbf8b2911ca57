// kstatus reads one Kubernetes object as JSON on stdin and prints what kstatus
// (sigs.k8s.io/cli-utils/pkg/kstatus/status, the library Flux and kpt use to judge
// health) computes for it: one JSON line {"status": ..., "message": ...}.
//
// The end-to-end tests feed it real Campaigns read from the API server, so the claims
// in the README's GitOps section are checked against the real consumer, not a copy of it.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	raw, err := io.ReadAll(os.Stdin)
	if err != nil {
		fail("reading stdin: %v", err)
	}
	// The unstructured decoder keeps integers as int64, as the API machinery does
	// (plain encoding/json would make metadata.generation a float64 kstatus refuses).
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(raw); err != nil {
		fail("stdin is not a Kubernetes object: %v", err)
	}
	res, err := status.Compute(obj)
	if err != nil {
		fail("kstatus: %v", err)
	}
	out, err := json.Marshal(map[string]string{"status": res.Status.String(), "message": res.Message})
	if err != nil {
		fail("encoding the result: %v", err)
	}
	fmt.Println(string(out))
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "kstatus: "+format+"\n", args...)
	os.Exit(2)
}

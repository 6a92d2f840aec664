// Command kstatus prints the kstatus verdict (Current, InProgress, Failed,
// Terminating, Unknown) that Flux and kpt compute for each Kubernetes object
// read from stdin: a JSON object, a JSON list (`kubectl get -o json`), or a
// stream of them. One line per object: "<kind>/<name> <status> <message>".
// Built from sigs.k8s.io/cli-utils so mailroom's tests ask the real code.
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

func main() {
	decoder := json.NewDecoder(os.Stdin)
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err == io.EOF {
			return
		} else if err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: reading stdin:", err)
			os.Exit(2)
		}
		// Integers as int64, as the apiserver's own decoding gives them.
		var object map[string]interface{}
		if err := utiljson.Unmarshal(raw, &object); err != nil {
			fmt.Fprintln(os.Stderr, "kstatus: decoding:", err)
			os.Exit(2)
		}
		items, isList := object["items"].([]interface{})
		if !isList {
			items = []interface{}{object}
		}
		for _, item := range items {
			fields, ok := item.(map[string]interface{})
			if !ok {
				fmt.Fprintln(os.Stderr, "kstatus: an item is not an object")
				os.Exit(2)
			}
			report(&unstructured.Unstructured{Object: fields})
		}
	}
}

func report(object *unstructured.Unstructured) {
	result, err := status.Compute(object)
	if err != nil {
		fmt.Fprintf(os.Stderr, "kstatus: %s/%s: %v\n", object.GetKind(), object.GetName(), err)
		os.Exit(1)
	}
	fmt.Printf("%s/%s %s %s\n", object.GetKind(), object.GetName(), result.Status, result.Message)
}

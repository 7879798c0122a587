// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the health library Flux,
// kpt and cli-utils' `apply --wait` use) computes for Kubernetes objects: one line per object with its
// status (InProgress, Current, Failed, Terminating, NotFound, Unknown) and message.
//
//	kstatus [-o table|json] [FILE...]                  objects from YAML or JSON files ("-" or none: stdin);
//	                                                   List objects and multi-document YAML are expanded
//	kstatus -kubeconfig K [-n NS] [-o ...] RESOURCE... live objects, e.g. buildrequests.longshot.dev or
//	                                                   br/rest-api (short names resolved by discovery)
//	kstatus -version                                   the cli-utils version it was built with
//
// Exit status 0 when every object was computed, 1 on an error (a file that does not parse, an object
// kstatus cannot compute, a resource the API server does not know).
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"text/tabwriter"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// SourceHash is stamped by hack/go-tools.sh (-X main.SourceHash=...) so a cached binary can be checked
// against these sources.
var SourceHash = "unknown"

type row struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

func main() {
	kubeconfig := flag.String("kubeconfig", "", "read live objects through this kubeconfig instead of files")
	namespace := flag.String("n", "", "namespace of live objects (default: the kubeconfig's; all namespaces with -A)")
	all := flag.Bool("A", false, "live objects of every namespace")
	output := flag.String("o", "table", "output: table or json")
	version := flag.Bool("version", false, "print the cli-utils version and the source hash, then exit")
	flag.Parse()
	if *version {
		fmt.Printf("kstatus %s cli-utils %s\n", SourceHash, cliUtilsVersion())
		return
	}
	if *output != "table" && *output != "json" {
		fail(fmt.Errorf("-o %q: expected table or json", *output))
	}
	var objs []*unstructured.Unstructured
	var err error
	if *kubeconfig != "" {
		if flag.NArg() == 0 {
			fail(errors.New("-kubeconfig needs at least one RESOURCE argument, e.g. buildrequests.longshot.dev"))
		}
		objs, err = fromCluster(*kubeconfig, *namespace, *all, flag.Args())
	} else {
		objs, err = fromFiles(flag.Args())
	}
	if err != nil {
		fail(err)
	}
	rows := make([]row, 0, len(objs))
	for _, u := range objs {
		res, err := status.Compute(u)
		if err != nil {
			fail(fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err))
		}
		rows = append(rows, row{u.GetKind(), u.GetNamespace(), u.GetName(), res.Status.String(), res.Message})
	}
	if *output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rows); err != nil {
			fail(err)
		}
		return
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "KIND\tNAMESPACE\tNAME\tSTATUS\tMESSAGE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Kind, r.Namespace, r.Name, r.Status, r.Message)
	}
	_ = w.Flush()
}

func fail(err error) {
	fmt.Fprintf(os.Stderr, "kstatus: %v\n", err)
	os.Exit(1)
}

func cliUtilsVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == "sigs.k8s.io/cli-utils" {
				return d.Version
			}
		}
	}
	return "unknown"
}

func fromFiles(paths []string) ([]*unstructured.Unstructured, error) {
	if len(paths) == 0 {
		paths = []string{"-"}
	}
	var out []*unstructured.Unstructured
	for _, p := range paths {
		var r io.Reader = os.Stdin
		name := "stdin"
		if p != "-" {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			defer f.Close()
			r, name = f, p
		}
		dec := utilyaml.NewYAMLOrJSONDecoder(bufio.NewReader(r), 4096)
		for i := 0; ; i++ {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s, document %d: %w", name, i, err)
			}
			// apimachinery's json keeps whole numbers int64, as the API server's decoder does (kstatus
			// reads metadata.generation as int64)
			var doc map[string]interface{}
			if err := utiljson.Unmarshal(raw, &doc); err != nil {
				return nil, fmt.Errorf("%s, document %d: %w", name, i, err)
			}
			if doc == nil {
				continue
			}
			out = append(out, expand(&unstructured.Unstructured{Object: doc})...)
		}
	}
	return out, nil
}

// expand turns a List (kind v1/List or any *List with items) into its items.
func expand(u *unstructured.Unstructured) []*unstructured.Unstructured {
	items, found, _ := unstructured.NestedSlice(u.Object, "items")
	if !found || !strings.HasSuffix(u.GetKind(), "List") {
		return []*unstructured.Unstructured{u}
	}
	var out []*unstructured.Unstructured
	for _, it := range items {
		if m, ok := it.(map[string]interface{}); ok {
			out = append(out, expand(&unstructured.Unstructured{Object: m})...)
		}
	}
	return out
}

func fromCluster(kubeconfig, namespace string, all bool, args []string) ([]*unstructured.Unstructured, error) {
	loader := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loader, &clientcmd.ConfigOverrides{})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, err
	}
	if namespace == "" && !all {
		if namespace, _, err = cc.Namespace(); err != nil {
			return nil, err
		}
	}
	if all {
		namespace = ""
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	cached := memory.NewMemCacheClient(dc)
	mapper := restmapper.NewShortcutExpander(restmapper.NewDeferredDiscoveryRESTMapper(cached), cached, nil)
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, arg := range args {
		resource, name, _ := strings.Cut(arg, "/")
		gvr, err := mapper.ResourceFor(schema.ParseGroupResource(resource).WithVersion(""))
		if err != nil {
			return nil, fmt.Errorf("resource %q: %w", resource, err)
		}
		ri := dyn.Resource(gvr).Namespace(namespace)
		if name != "" {
			u, err := ri.Get(ctx(), name, metav1.GetOptions{})
			if err != nil {
				return nil, err
			}
			out = append(out, u)
			continue
		}
		list, err := ri.List(ctx(), metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		for i := range list.Items {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

func ctx() context.Context { return context.Background() }

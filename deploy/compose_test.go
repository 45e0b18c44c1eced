// Package deploy_test checks the container deployment without Docker:
// docker-compose.yml (loaded with compose-go, the library docker compose
// itself uses), the Dockerfile and its .dockerignore, the Prometheus
// configuration the compose file mounts, and the Grafana provisioning and
// dashboard. Each check ties the files to the code: environment variables
// the binary reads, metrics it exports, ports it listens on.
//
// promtool checks the Prometheus configuration when it is on PATH; under
// CI=true a missing promtool (or go) fails the run instead of skipping.
package deploy_test

import (
	"cmp"
	"encoding/json"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/distribution/reference"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"go.yaml.in/yaml/v3"
)

// root is the repository root, relative to this package's directory (the
// working directory of its tests).
const root = ".."

// registryRepo is the image the compose file builds from ./Dockerfile.
const registryRepo = "docker.io/usernameregistry/registry"

// pgEnv are the libpq variables pgx reads when DATABASE_URL is empty.
var pgEnv = []string{"PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE"}

// scenario is one way of running the compose file: the variables set in
// the shell and the profiles enabled.
type scenario struct {
	name     string
	env      map[string]string
	profiles []string
}

// scenarios are the documented ways to run docker-compose.yml.
var scenarios = []scenario{
	{name: "single broker"},
	{
		name: "kafka3 profile",
		env: map[string]string{
			"REGISTRY_KAFKA_BROKERS":      "kafka-1:9092,kafka-2:9092,kafka-3:9092",
			"REGISTRY_REPLICATION_FACTOR": "3",
		},
		profiles: []string{"kafka3"},
	},
}

// load reads docker-compose.yml as docker compose would, with only env as
// the shell's variables (never the test process's) and no .env file.
func load(t *testing.T, env map[string]string, profiles ...string) *types.Project {
	t.Helper()
	var kv []string
	for k, v := range env {
		kv = append(kv, k+"="+v)
	}
	opts, err := cli.NewProjectOptions([]string{filepath.Join(root, "docker-compose.yml")},
		cli.WithWorkingDirectory(root),
		cli.WithEnv(kv),
		cli.WithProfiles(profiles),
	)
	if err != nil {
		t.Fatalf("compose options: %v", err)
	}
	p, err := opts.LoadProject(t.Context())
	if err != nil {
		t.Fatalf("loading docker-compose.yml (profiles %v): %v", profiles, err)
	}
	return p
}

// loadAll loads the compose file with every profile enabled.
func loadAll(t *testing.T) *types.Project {
	t.Helper()
	p := load(t, nil, "*")
	if len(p.DisabledServices) > 0 {
		t.Fatalf("services disabled with every profile on: %v", slices.Sorted(maps.Keys(p.DisabledServices)))
	}
	return p
}

// need reports a missing test dependency: a failure under CI=true, a skip
// elsewhere.
func need(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and a test dependency is missing: " + msg)
	}
	t.Skip("test dependency missing: " + msg)
}

func isRegistry(s types.ServiceConfig) bool {
	if s.Build != nil {
		return true
	}
	ref, err := reference.ParseNormalizedNamed(s.Image)
	return err == nil && ref.Name() == registryRepo
}

// repo is an image's repository without tag or digest (docker.io/library/postgres).
func repo(image string) string {
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return ""
	}
	return ref.Name()
}

func env(s types.ServiceConfig, key string) string {
	if v, ok := s.Environment[key]; ok && v != nil {
		return *v
	}
	return ""
}

// checkPinned fails unless image names a specific tag (not latest) or a digest.
func checkPinned(t *testing.T, where, image string) {
	t.Helper()
	ref, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		t.Errorf("%s: image %q does not parse: %v", where, image, err)
		return
	}
	if _, ok := ref.(reference.Digested); ok {
		return
	}
	tagged, ok := ref.(reference.Tagged)
	switch {
	case !ok:
		t.Errorf("%s: image %q has no tag; pin a version", where, image)
	case tagged.Tag() == "latest":
		t.Errorf("%s: image %q uses latest; pin a version", where, image)
	}
}

// TestImagesPinned checks that every image in the compose file names a
// version, and that every registry service runs the image built from
// ./Dockerfile.
func TestImagesPinned(t *testing.T) {
	t.Parallel()
	p := loadAll(t)
	var registries int
	for name, s := range p.Services {
		if s.Image == "" {
			t.Errorf("service %s has no image: name it so its version is visible", name)
			continue
		}
		checkPinned(t, "service "+name, s.Image)
		if !isRegistry(s) {
			continue
		}
		registries++
		if repo(s.Image) != registryRepo {
			t.Errorf("service %s builds image %s; registry services share %s", name, s.Image, registryRepo)
		}
		if s.Build == nil {
			t.Errorf("service %s runs %s without a build section", name, s.Image)
			continue
		}
		abs, _ := filepath.Abs(root)
		if s.Build.Context != abs {
			t.Errorf("service %s builds from %s, want the repository root %s", name, s.Build.Context, abs)
		}
		if _, err := os.Stat(filepath.Join(s.Build.Context, cmp.Or(s.Build.Dockerfile, "Dockerfile"))); err != nil {
			t.Errorf("service %s: Dockerfile: %v", name, err)
		}
	}
	if registries == 0 {
		t.Error("no registry service found")
	}
}

// envNames are the string literals passed to the functions cmd/registry
// reads its environment with.
var envNames = regexp.MustCompile(`(?:os\.Getenv|os\.LookupEnv|envOr|\.envInt|\b(?:c|e|env)\.(?:Or|Int|Bool|Duration))\(\s*"([A-Za-z_][A-Za-z0-9_]*)"`)

// binaryEnv is every environment variable the registry binary reads: the
// ones cmd/registry and internal/cli (its flag and environment parsing,
// shared with registry-bench) name, plus the PG* variables pgx reads.
func binaryEnv(t *testing.T) map[string]bool {
	t.Helper()
	var files []string
	for _, dir := range []string{filepath.Join("cmd", "registry"), filepath.Join("internal", "cli")} {
		fs, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		if err != nil || len(fs) == 0 {
			t.Fatalf("no Go files in %s (%v)", dir, err)
		}
		files = append(files, fs...)
	}
	known := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range envNames.FindAllStringSubmatch(string(src), -1) {
			known[m[1]] = true
		}
	}
	// If the scan finds none of these, the regexp no longer matches how
	// cmd/registry reads its environment: fix the scan, not the list.
	for _, must := range []string{"REGISTRY_KAFKA_BROKERS", "DATABASE_URL", "REGISTRY_HTTP_ADDR", "REGISTRY_PARTITIONS", "REGISTRY_LOG_LEVEL"} {
		if !known[must] {
			t.Fatalf("scanning cmd/registry and internal/cli found no %s; found %v", must, slices.Sorted(maps.Keys(known)))
		}
	}
	for _, v := range pgEnv {
		known[v] = true
	}
	return known
}

// TestRegistryEnvironment checks that registry services set only variables
// the binary reads: a misspelt or invented one would be silently ignored.
func TestRegistryEnvironment(t *testing.T) {
	t.Parallel()
	known := binaryEnv(t)
	p := loadAll(t)
	for name, s := range p.Services {
		if !isRegistry(s) {
			continue
		}
		if len(s.EnvFiles) > 0 {
			t.Errorf("service %s uses env_file; keep registry settings in docker-compose.yml where this test sees them", name)
		}
		for k := range s.Environment {
			if !known[k] {
				t.Errorf("service %s sets %s, which the registry binary does not read (it reads %v)", name, k, slices.Sorted(maps.Keys(known)))
			}
		}
	}
	for _, k := range dockerfile(t).env {
		if !known[k] {
			t.Errorf("Dockerfile sets ENV %s, which the registry binary does not read", k)
		}
	}
}

// TestPublishedPorts checks that no two services publish the same host port.
func TestPublishedPorts(t *testing.T) {
	t.Parallel()
	p := loadAll(t)
	owner := map[string]string{}
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		for _, port := range p.Services[name].Ports {
			if port.Published == "" {
				t.Errorf("service %s publishes container port %d on a random host port; pick one", name, port.Target)
				continue
			}
			key := port.Published + "/" + cmp.Or(port.Protocol, "tcp")
			if other, ok := owner[key]; ok {
				t.Errorf("host port %s is published by both %s and %s", key, other, name)
			}
			owner[key] = name
		}
	}
}

// TestDependsOn checks that every dependency can be satisfied: waiting for
// health needs a healthcheck, waiting for completion needs a service that
// is not restarted, and an optional dependency is one a profile switches
// off.
func TestDependsOn(t *testing.T) {
	t.Parallel()
	p := loadAll(t)
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			target, ok := p.Services[dep]
			if !ok {
				t.Errorf("service %s depends on undefined service %s", name, dep)
				continue
			}
			switch d.Condition {
			case types.ServiceConditionHealthy:
				hc := target.HealthCheck
				if hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE" {
					t.Errorf("service %s waits for %s to be healthy, but %s has no healthcheck", name, dep, dep)
				}
			case types.ServiceConditionCompletedSuccessfully:
				if target.Restart != "" && target.Restart != types.RestartPolicyNo {
					t.Errorf("service %s waits for %s to complete, but %s has restart: %s", name, dep, dep, target.Restart)
				}
			}
			if !d.Required && len(target.Profiles) == 0 {
				t.Errorf("service %s depends on %s with required: false, but %s is always enabled", name, dep, dep)
			}
		}
	}
}

// TestBindMounts checks that every file or directory the compose file
// mounts from the repository exists.
func TestBindMounts(t *testing.T) {
	t.Parallel()
	p := loadAll(t)
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			switch v.Type {
			case types.VolumeTypeBind:
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("service %s mounts %s: %v", name, v.Source, err)
				}
			case types.VolumeTypeVolume:
				if _, ok := p.Volumes[v.Source]; !ok {
					t.Errorf("service %s mounts undeclared volume %q", name, v.Source)
				}
			}
		}
	}
	// Data that must survive `docker compose down` lives in named volumes.
	for name, s := range p.Services {
		switch repo(s.Image) {
		case "docker.io/apache/kafka", "docker.io/library/postgres", "docker.io/prom/prometheus", "docker.io/grafana/grafana":
			if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Type == types.VolumeTypeVolume && v.Source != "" }) {
				t.Errorf("service %s keeps its data in no named volume", name)
			}
		}
	}
}

// TestRegistryReachesItsDependencies checks, for each documented way of
// running the file, that the brokers and database the registry services
// are configured with are services of the file, listening there.
func TestRegistryReachesItsDependencies(t *testing.T) {
	t.Parallel()
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			p := load(t, sc.env, sc.profiles...)
			var checked int
			for name, s := range p.Services {
				if !isRegistry(s) {
					continue
				}
				if dsn := env(s, "DATABASE_URL"); dsn != "" {
					checkDatabase(t, p, name, dsn)
				}
				if _, ok := s.Environment["REGISTRY_KAFKA_BROKERS"]; ok {
					checkBrokers(t, p, name, s)
					checked++
				}
			}
			if checked == 0 {
				t.Error("no registry service sets REGISTRY_KAFKA_BROKERS")
			}
		})
	}
}

func checkDatabase(t *testing.T, p *types.Project, name, dsn string) {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Errorf("service %s: DATABASE_URL does not parse: %v", name, err)
		return
	}
	pg, ok := p.Services[u.Hostname()]
	if !ok {
		t.Errorf("service %s: DATABASE_URL host %q is not an enabled service", name, u.Hostname())
		return
	}
	if repo(pg.Image) != "docker.io/library/postgres" {
		t.Errorf("service %s: DATABASE_URL host %s runs %s, not postgres", name, u.Hostname(), pg.Image)
	}
	if port := cmp.Or(u.Port(), "5432"); port != "5432" {
		t.Errorf("service %s: DATABASE_URL port %s; the postgres image listens on 5432", name, port)
	}
	pass, _ := u.User.Password()
	for k, want := range map[string]string{
		"POSTGRES_USER":     u.User.Username(),
		"POSTGRES_PASSWORD": pass,
		"POSTGRES_DB":       strings.TrimPrefix(u.Path, "/"),
	} {
		if got := env(pg, k); got != want {
			t.Errorf("service %s: DATABASE_URL has %s %q but %s sets %q", name, k, want, u.Hostname(), got)
		}
	}
}

func checkBrokers(t *testing.T, p *types.Project, name string, s types.ServiceConfig) {
	t.Helper()
	list := env(s, "REGISTRY_KAFKA_BROKERS")
	if list == "" {
		t.Errorf("service %s: REGISTRY_KAFKA_BROKERS is empty", name)
		return
	}
	clusters := map[string]bool{}
	for _, addr := range strings.Split(list, ",") {
		host, port, err := net.SplitHostPort(strings.TrimSpace(addr))
		if err != nil {
			t.Errorf("service %s: broker %q: %v", name, addr, err)
			continue
		}
		broker, ok := p.Services[host]
		if !ok {
			t.Errorf("service %s: broker host %q is not an enabled service", name, host)
			continue
		}
		if !strings.Contains(env(broker, "KAFKA_ADVERTISED_LISTENERS"), "//"+host+":"+port) {
			t.Errorf("service %s: broker %s:%s is not among %s's advertised listeners %q",
				name, host, port, host, env(broker, "KAFKA_ADVERTISED_LISTENERS"))
		}
		if _, ok := s.DependsOn[host]; !ok {
			t.Errorf("service %s uses broker %s but does not depend on it", name, host)
		}
		clusters[env(broker, "CLUSTER_ID")] = true
	}
	if len(clusters) != 1 {
		t.Errorf("service %s: brokers %s belong to %d clusters", name, list, len(clusters))
		return
	}
	// The replication factor the topics are created with must fit the cluster.
	rf, err := strconv.Atoi(cmp.Or(env(s, "REGISTRY_REPLICATION_FACTOR"), "-1"))
	if err != nil {
		t.Errorf("service %s: REGISTRY_REPLICATION_FACTOR: %v", name, err)
		return
	}
	var size int
	for _, b := range p.Services {
		if repo(b.Image) == "docker.io/apache/kafka" && clusters[env(b, "CLUSTER_ID")] {
			size++
		}
	}
	if rf > size {
		t.Errorf("service %s: replication factor %d on a cluster of %d brokers", name, rf, size)
	}
}

// TestKafkaClusters checks that every KRaft quorum voter is a broker of
// the same cluster with that node id, listening on the controller port.
func TestKafkaClusters(t *testing.T) {
	t.Parallel()
	p := loadAll(t)
	var brokers int
	for name, s := range p.Services {
		if repo(s.Image) != "docker.io/apache/kafka" {
			continue
		}
		brokers++
		for _, k := range []string{"CLUSTER_ID", "KAFKA_NODE_ID", "KAFKA_PROCESS_ROLES", "KAFKA_CONTROLLER_QUORUM_VOTERS", "KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_LOG_DIRS"} {
			if env(s, k) == "" {
				t.Errorf("broker %s does not set %s", name, k)
			}
		}
		if env(s, "KAFKA_AUTO_CREATE_TOPICS_ENABLE") != "false" {
			t.Errorf("broker %s: set KAFKA_AUTO_CREATE_TOPICS_ENABLE=false; the registry creates its topics", name)
		}
		if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool { return v.Target == env(s, "KAFKA_LOG_DIRS") }) {
			t.Errorf("broker %s: KAFKA_LOG_DIRS %s is not a volume", name, env(s, "KAFKA_LOG_DIRS"))
		}
		voters := strings.Split(env(s, "KAFKA_CONTROLLER_QUORUM_VOTERS"), ",")
		for _, v := range voters {
			id, addr, _ := strings.Cut(v, "@")
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				t.Errorf("broker %s: voter %q: %v", name, v, err)
				continue
			}
			peer, ok := p.Services[host]
			switch {
			case !ok:
				t.Errorf("broker %s: voter %s is not a service", name, host)
			case env(peer, "CLUSTER_ID") != env(s, "CLUSTER_ID"):
				t.Errorf("broker %s: voter %s has another CLUSTER_ID", name, host)
			case env(peer, "KAFKA_NODE_ID") != id:
				t.Errorf("broker %s: voter %s is node %s, but %s has KAFKA_NODE_ID %s", name, host, id, host, env(peer, "KAFKA_NODE_ID"))
			case !strings.Contains(env(peer, "KAFKA_LISTENERS"), ":"+port):
				t.Errorf("broker %s: voter %s:%s, but %s listens on %s", name, host, port, host, env(peer, "KAFKA_LISTENERS"))
			}
		}
		// Internal topics cannot have more replicas than the cluster has brokers.
		for _, k := range []string{"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "KAFKA_DEFAULT_REPLICATION_FACTOR"} {
			if v := env(s, k); v != "" {
				if n, err := strconv.Atoi(v); err != nil || n > len(voters) {
					t.Errorf("broker %s: %s=%s with %d brokers in its cluster", name, k, v, len(voters))
				}
			}
		}
	}
	if brokers == 0 {
		t.Error("no apache/kafka service")
	}
}

// listenPort is the port a registry service serves its metrics on: the
// operator address for serve (the API's own port serves no metrics), the
// metrics address for project; "" for other commands. The address must be
// reachable from other containers.
func listenPort(t *testing.T, name string, s types.ServiceConfig) string {
	t.Helper()
	var key string
	switch {
	case len(s.Command) == 0:
		t.Errorf("registry service %s has no command", name)
		return ""
	case s.Command[0] == "serve":
		key = "REGISTRY_OPS_ADDR"
	case s.Command[0] == "project":
		key = "REGISTRY_METRICS_ADDR"
	default:
		return ""
	}
	addr := env(s, key)
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Errorf("service %s: %s=%q: %v", name, key, addr, err)
		return ""
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("service %s: %s=%s is not reachable from other containers; listen on 0.0.0.0", name, key, addr)
	}
	return port
}

type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName       string `yaml:"job_name"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// serviceByRepo returns the one service running image repository r.
func serviceByRepo(t *testing.T, p *types.Project, r string) types.ServiceConfig {
	t.Helper()
	var found []types.ServiceConfig
	for _, s := range p.Services {
		if repo(s.Image) == r {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one service running %s, found %d", r, len(found))
	}
	return found[0]
}

// mountSource returns the repository path mounted at target in s.
func mountSource(t *testing.T, s types.ServiceConfig, target string) string {
	t.Helper()
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeBind && v.Target == target {
			return v.Source
		}
	}
	t.Fatalf("service %s mounts nothing at %s", s.Name, target)
	return ""
}

// TestPrometheus checks the configuration the compose file gives
// Prometheus: promtool accepts it, it is the file mounted, its rule files
// are mounted next to it, and it scrapes exactly the registry processes,
// on the ports they listen on.
func TestPrometheus(t *testing.T) {
	t.Parallel()
	p := loadAll(t)
	prom := serviceByRepo(t, p, "docker.io/prom/prometheus")
	configPath := "/etc/prometheus/prometheus.yml"
	for _, arg := range prom.Command {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			configPath = v
		}
	}
	src := mountSource(t, prom, configPath)
	want, _ := filepath.Abs(filepath.Join("prometheus", "prometheus-compose.yml"))
	if src != want {
		t.Fatalf("prometheus mounts %s as its configuration, want %s", src, want)
	}
	var cfg promConfig
	readYAML(t, src, &cfg)
	if len(cfg.RuleFiles) == 0 {
		t.Error("prometheus-compose.yml loads no rule files")
	}
	for _, r := range cfg.RuleFiles {
		in := mountSource(t, prom, path.Join(path.Dir(configPath), r))
		if in != filepath.Join(filepath.Dir(src), r) {
			t.Errorf("rule file %s: mounted from %s, but promtool checks %s", r, in, filepath.Join(filepath.Dir(src), r))
		}
	}

	expected := map[string]bool{}
	for name, s := range p.Services {
		if isRegistry(s) {
			if port := listenPort(t, name, s); port != "" {
				expected[net.JoinHostPort(name, port)] = true
			}
		}
	}
	scraped := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				if scraped[target] {
					t.Errorf("target %s is scraped twice; its series would be counted twice", target)
				}
				scraped[target] = true
				if !expected[target] {
					t.Errorf("job %s scrapes %s, which is not a registry service listening there (want some of %v)", sc.JobName, target, slices.Sorted(maps.Keys(expected)))
				}
			}
		}
	}
	for target := range expected {
		if !scraped[target] {
			t.Errorf("%s serves metrics but no job scrapes it", target)
		}
	}

	t.Run("promtool", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			need(t, "promtool is not on PATH: install Debian's prometheus package (apt-get install prometheus)")
		}
		out, err := exec.Command(promtool, "check", "config", src).CombinedOutput()
		t.Logf("promtool check config %s:\n%s", src, out)
		if err != nil {
			t.Errorf("promtool check config: %v", err)
		}
	})
}

type grafanaDatasources struct {
	Datasources []struct {
		Name string `yaml:"name"`
		UID  string `yaml:"uid"`
		Type string `yaml:"type"`
		URL  string `yaml:"url"`
	} `yaml:"datasources"`
}

type grafanaProviders struct {
	Providers []struct {
		Name    string `yaml:"name"`
		Type    string `yaml:"type"`
		Options struct {
			Path string `yaml:"path"`
		} `yaml:"options"`
	} `yaml:"providers"`
}

type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID         int          `json:"id"`
	Type       string       `json:"type"`
	Title      string       `json:"title"`
	Datasource *datasource  `json:"datasource"`
	Targets    []panelQuery `json:"targets"`
	Panels     []panel      `json:"panels"` // a collapsed row's panels
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panelQuery struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *datasource `json:"datasource"`
}

// TestGrafana checks the provisioning the compose file mounts: the data
// source points at the Prometheus service, the dashboards directory is
// the one mounted, and every dashboard parses and queries only metrics the
// registry exports, through the provisioned data source.
func TestGrafana(t *testing.T) {
	t.Parallel()
	p := loadAll(t)
	g := serviceByRepo(t, p, "docker.io/grafana/grafana")

	var ds grafanaDatasources
	dsDir := mountSource(t, g, "/etc/grafana/provisioning/datasources")
	readYAML(t, filepath.Join(dsDir, "prometheus.yml"), &ds)
	uids := map[string]bool{}
	for _, d := range ds.Datasources {
		uids[d.UID] = true
		u, err := url.Parse(d.URL)
		if err != nil {
			t.Errorf("data source %s: url: %v", d.Name, err)
			continue
		}
		if s, ok := p.Services[u.Hostname()]; !ok || repo(s.Image) != "docker.io/prom/prometheus" {
			t.Errorf("data source %s points at %s, which is not the Prometheus service", d.Name, u.Host)
		}
		if u.Port() != "9090" {
			t.Errorf("data source %s: port %q; Prometheus listens on 9090", d.Name, u.Port())
		}
	}

	var prov grafanaProviders
	readYAML(t, filepath.Join(mountSource(t, g, "/etc/grafana/provisioning/dashboards"), "registry.yml"), &prov)
	if len(prov.Providers) == 0 {
		t.Fatal("no dashboard provider")
	}
	want, _ := filepath.Abs(filepath.Join("grafana", "dashboards"))
	for _, pr := range prov.Providers {
		if src := mountSource(t, g, pr.Options.Path); src != want {
			t.Errorf("provider %s loads %s, mounted from %s; want %s", pr.Name, pr.Options.Path, src, want)
		}
	}
	if home := env(g, "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"); home != "" {
		rel, ok := strings.CutPrefix(home, prov.Providers[0].Options.Path+"/")
		if _, err := os.Stat(filepath.Join(want, rel)); !ok || err != nil {
			t.Errorf("home dashboard %s is not a mounted dashboard file", home)
		}
	}
	if env(g, "GF_AUTH_ANONYMOUS_ENABLED") != "true" || env(g, "GF_AUTH_ANONYMOUS_ORG_ROLE") != "Viewer" {
		t.Error("grafana: anonymous access should be on, as Viewer")
	}

	files, _ := filepath.Glob(filepath.Join(want, "*.json"))
	if len(files) == 0 {
		t.Fatal("no dashboards in deploy/grafana/dashboards")
	}
	metrics := exportedMetrics(t)
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			checkDashboard(t, f, uids, metrics)
		})
	}
}

func checkDashboard(t *testing.T, file string, uids map[string]bool, metrics func(string) bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s does not parse: %v", file, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("dashboard needs a uid and a title (uid %q, title %q)", d.UID, d.Title)
	}
	ids := map[int]bool{}
	var queries int
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, pn := range ps {
			if ids[pn.ID] {
				t.Errorf("panel id %d is used twice", pn.ID)
			}
			ids[pn.ID] = true
			if pn.Type == "row" {
				walk(pn.Panels)
				continue
			}
			if len(pn.Targets) == 0 {
				t.Errorf("panel %q has no query", pn.Title)
			}
			if pn.Datasource == nil || !uids[pn.Datasource.UID] {
				t.Errorf("panel %q does not use a provisioned data source (%v)", pn.Title, slices.Sorted(maps.Keys(uids)))
			}
			for _, q := range pn.Targets {
				queries++
				if strings.TrimSpace(q.Expr) == "" {
					t.Errorf("panel %q query %s has no expr", pn.Title, q.RefID)
				}
				if q.Datasource != nil && !uids[q.Datasource.UID] {
					t.Errorf("panel %q query %s uses data source %q", pn.Title, q.RefID, q.Datasource.UID)
				}
				for _, m := range metricNames(q.Expr) {
					if !metrics(m) {
						t.Errorf("panel %q query %s uses %s, which the registry does not export", pn.Title, q.RefID, m)
					}
				}
			}
		}
	}
	walk(d.Panels)
	if queries == 0 {
		t.Error("dashboard has no queries")
	}
}

// metricRegistration finds the metric names registered in the code.
var metricRegistration = regexp.MustCompile(`Name:\s*"(registry_[a-z0-9_]+)"`)

// exportedMetrics reports whether a name is a series the registry
// exports: its own metrics (and a histogram's _bucket, _count and _sum),
// franz-go's registry_kafka_* and Prometheus's up.
func exportedMetrics(t *testing.T) func(string) bool {
	t.Helper()
	names := map[string]bool{}
	for _, f := range []string{"claims/metrics.go", "projector/metrics.go", "internal/app/stack/stack.go"} {
		src, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range metricRegistration.FindAllStringSubmatch(string(src), -1) {
			names[m[1]] = true
		}
	}
	for _, must := range []string{"registry_decisions_total", "registry_claim_decision_seconds", "registry_waiters"} {
		if !names[must] {
			t.Fatalf("scanning the metrics code found no %s; found %v", must, slices.Sorted(maps.Keys(names)))
		}
	}
	return func(m string) bool {
		if m == "up" || strings.HasPrefix(m, "registry_kafka_") || names[m] {
			return true
		}
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			if base, ok := strings.CutSuffix(m, suffix); ok && names[base] {
				return true
			}
		}
		return false
	}
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\]]*\]`)
	promGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promTokens   = regexp.MustCompile(`[0-9][0-9.]*[a-zA-Z]*|[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?`)
	promKeywords = map[string]bool{
		"and": true, "or": true, "unless": true, "offset": true, "bool": true,
		"by": true, "without": true, "on": true, "ignoring": true,
		"group_left": true, "group_right": true, "inf": true, "nan": true,
	}
)

// metricNames returns the metric names a PromQL expression selects:
// identifiers that are not functions, keywords, label names or strings.
func metricNames(expr string) []string {
	expr = promStrings.ReplaceAllString(expr, `""`)
	expr = promMatchers.ReplaceAllString(expr, " ")
	expr = promRanges.ReplaceAllString(expr, " ")
	expr = promGrouping.ReplaceAllString(expr, " ")
	var out []string
	for _, m := range promTokens.FindAllStringSubmatch(expr, -1) {
		tok := m[0]
		if tok[0] >= '0' && tok[0] <= '9' || m[1] != "" || promKeywords[strings.ToLower(tok)] {
			continue // a number, a function call or a keyword
		}
		out = append(out, tok)
	}
	return out
}

func TestMetricNames(t *testing.T) {
	t.Parallel()
	for expr, want := range map[string][]string{
		`histogram_quantile(0.99, sum by (le, route) (rate(registry_http_request_duration_seconds_bucket{code=~"5.."}[$__rate_interval])))`: {"registry_http_request_duration_seconds_bucket"},
		`count(up{job=~"registry-.*"} == 0) or vector(0)`:                                    {"up"},
		`max(registry_outbox_backlog) > 100 and max(deriv(registry_outbox_backlog[5m])) > 0`: {"registry_outbox_backlog", "registry_outbox_backlog"},
		`sum(rate(a_total[5m] offset 1h)) / ignoring (x) b_total`:                            {"a_total", "b_total"},
	} {
		if got := metricNames(expr); !slices.Equal(got, want) {
			t.Errorf("metricNames(%s) = %v, want %v", expr, got, want)
		}
	}
}

// dockerfileInfo is what the test needs from the Dockerfile.
type dockerfileInfo struct {
	froms      []string // the external images, in order
	finalFrom  string
	finalUser  string // the last USER of the final stage
	env        []string
	expose     []string
	entrypoint string
}

func dockerfile(t *testing.T) dockerfileInfo {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	// Join continuation lines, drop comments.
	var lines []string
	var cur strings.Builder
	for _, l := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(l)
		if strings.HasPrefix(trimmed, "#") {
			continue
		}
		if c, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(c + " ")
			continue
		}
		cur.WriteString(trimmed)
		if s := strings.TrimSpace(cur.String()); s != "" {
			lines = append(lines, s)
		}
		cur.Reset()
	}
	var d dockerfileInfo
	stages := map[string]bool{}
	for _, l := range lines {
		instr, args, _ := strings.Cut(l, " ")
		fields := strings.Fields(args)
		switch strings.ToUpper(instr) {
		case "FROM":
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:]
			}
			if len(fields) == 0 {
				t.Fatalf("Dockerfile: %q names no image", l)
			}
			image := fields[0]
			if !stages[image] { // not built FROM an earlier stage
				d.froms = append(d.froms, image)
			}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				stages[fields[2]] = true
			}
			d.finalFrom, d.finalUser = image, ""
		case "USER":
			d.finalUser = strings.TrimSpace(args)
		case "ENV":
			for _, f := range fields {
				if k, _, ok := strings.Cut(f, "="); ok {
					d.env = append(d.env, k)
				}
			}
		case "EXPOSE":
			d.expose = append(d.expose, fields...)
		case "ENTRYPOINT":
			d.entrypoint = strings.TrimSpace(args)
		}
	}
	return d
}

// TestDockerfile checks the Dockerfile without building it: pinned base
// images, the Go version of go.mod, a non-root final stage, the entry
// point, and the ports the compose file uses exposed.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	d := dockerfile(t)
	if len(d.froms) < 2 {
		t.Fatalf("want a multi-stage build, found FROM %v", d.froms)
	}
	gomod, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.(\d+))?\s*$`).FindStringSubmatch(string(gomod))
	if m == nil {
		t.Fatal("go.mod has no go directive")
	}
	var sawGo bool
	for _, image := range d.froms {
		if strings.Contains(image, "$") {
			t.Errorf("FROM %s: spell the image out so its version is visible", image)
			continue
		}
		checkPinned(t, "Dockerfile FROM", image)
		ref, err := reference.ParseNormalizedNamed(image)
		if err != nil || ref.Name() != "docker.io/library/golang" {
			continue
		}
		sawGo = true
		tag := ""
		if tagged, ok := ref.(reference.Tagged); ok {
			tag = tagged.Tag()
		}
		v := regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)`).FindStringSubmatch(tag)
		switch {
		case v == nil:
			t.Errorf("FROM %s: pin a patch release (golang:%s.%s.N-...)", image, m[1], m[2])
		case v[1] != m[1] || v[2] != m[2]:
			t.Errorf("FROM %s: go.mod says go %s.%s", image, m[1], m[2])
		case m[3] != "" && atoi(v[3]) < atoi(m[3]):
			t.Errorf("FROM %s is older than go.mod's go %s.%s.%s", image, m[1], m[2], m[3])
		}
	}
	if !sawGo {
		t.Error("no golang build stage")
	}
	if u := d.finalUser; u == "" || u == "root" || u == "0" || strings.HasPrefix(u, "0:") || strings.HasPrefix(u, "root:") {
		t.Errorf("final stage (%s) runs as %q; run as a non-root user", d.finalFrom, u)
	}
	if d.entrypoint != `["/registry"]` {
		t.Errorf(`ENTRYPOINT is %s, want ["/registry"]`, d.entrypoint)
	}
	p := loadAll(t)
	for name, s := range p.Services {
		if !isRegistry(s) {
			continue
		}
		if port := listenPort(t, name, s); port != "" && !slices.Contains(d.expose, port) {
			t.Errorf("service %s listens on %s, which the Dockerfile does not EXPOSE (%v)", name, port, d.expose)
		}
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// TestDockerignore checks that .dockerignore keeps every file the build
// needs in the build context: go.mod, go.sum, and the Go files and
// embedded files of every package of this module that cmd/registry
// imports, as `go list` reports them for a static build.
func TestDockerignore(t *testing.T) {
	t.Parallel()
	gobin, err := exec.LookPath("go")
	if err != nil {
		need(t, "the go command is not on PATH")
	}
	f, err := os.Open(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(gobin, "list", "-deps", "-f",
		`{{if and .Module .Module.Main}}{{.Dir}}{{range .GoFiles}}|{{.}}{{end}}{{range .EmbedFiles}}|{{.}}{{end}}{{end}}`,
		"./cmd/registry")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	abs, _ := filepath.Abs(root)
	needed := []string{"go.mod", "go.sum"}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		parts := strings.Split(l, "|")
		if parts[0] == "" {
			continue
		}
		dir, err := filepath.Rel(abs, parts[0])
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range parts[1:] {
			needed = append(needed, filepath.ToSlash(filepath.Join(dir, f)))
		}
	}
	if len(needed) < 10 {
		t.Fatalf("go list found only %v", needed)
	}
	sort.Strings(needed)
	for _, f := range needed {
		excluded, err := pm.MatchesOrParentMatches(f)
		if err != nil {
			t.Fatal(err)
		}
		if excluded {
			t.Errorf(".dockerignore excludes %s, which the build needs", f)
		}
	}
	// And it keeps out what must never be sent to the daemon.
	for _, f := range []string{".git/config", ".registry/postgres/PG_VERSION", "registry", "bin/registry", "docs/design.md", "claims/policy_test.go"} {
		if excluded, _ := pm.MatchesOrParentMatches(f); !excluded {
			t.Errorf(".dockerignore does not exclude %s", f)
		}
	}
}

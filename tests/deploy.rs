//! Deployment artefacts (issue 7): the kustomize overlays render offline and every object
//! validates against the Kubernetes schemas (kubernetes-validate, bundled schemas, no network);
//! the rendered objects keep the properties the node-local and sidecar setups rely on; the
//! configurations they ship pass `ndots proxy --check-config`; the Dockerfile passes hadolint
//! with no rule ignored; the dashboard queries only metrics the proxy exports.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use common::tools::require;

/// The Kubernetes versions the manifests are checked against: the oldest we support (native
/// sidecars are on by default from 1.29, GA in 1.33) and the newest the validator knows.
const KUBERNETES_VERSIONS: &[&str] = &["1.33.0", "1.37.0"];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn output(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn render(overlay: &str) -> String {
    let (ok, text) = output(
        Command::new("kubectl")
            .arg("kustomize")
            .arg(root().join("deploy").join(overlay)),
    );
    assert!(ok, "kubectl kustomize deploy/{overlay}:\n{text}");
    text
}

/// The rendered stream's objects (kustomize separates them with `---` lines).
fn objects(stream: &str) -> Vec<Value> {
    stream
        .split("\n---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| yaml_serde::from_str(d).unwrap_or_else(|e| panic!("{e}:\n{d}")))
        .collect()
}

fn find<'a>(objs: &'a [Value], kind: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

fn validate(file: &Path, version: &str) -> (bool, String) {
    output(
        Command::new("kubernetes-validate")
            .args(["--strict", "--kubernetes-version", version])
            .arg(file),
    )
}

fn find_named<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

/// The overlays a user applies: each renders and validates on its own.
const OVERLAYS: &[&str] = &[
    "node-local",
    "sidecar",
    "clouds/aws",
    "clouds/gcp",
    "clouds/azure",
    "clouds/kind",
    "collect",
];

/// What Kubernetes would put in the pods' environment for the Services and ConfigMaps the
/// configurations name (a documentation address, never a real cluster's).
const POD_ENV: &[(&str, &str)] = &[
    ("KUBE_DNS_UPSTREAM_SERVICE_HOST", "192.0.2.53"),
    ("CLUSTER_DNS", "192.0.2.53"),
];

/// `ndots proxy --check-config` on a ConfigMap's file, with the pod's environment.
fn check_config(objs: &[Value], file: &str, dir: &Path) {
    check_config_with(objs, file, dir, &[]);
}

fn check_config_with(objs: &[Value], file: &str, dir: &Path, flags: &[&str]) {
    let text = find(objs, "ConfigMap")["data"][file]
        .as_str()
        .unwrap_or_else(|| panic!("the ConfigMap has no {file}"));
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    let (ok, out) = output(
        Command::new(env!("CARGO_BIN_EXE_ndots"))
            .args(["proxy", "--check-config"])
            .arg(&path)
            .args(flags)
            .envs(POD_ENV.iter().copied()),
    );
    assert!(
        ok,
        "the shipped {file} is not a valid configuration:\n{out}"
    );
}

#[test]
fn overlays_render_offline_and_validate_against_the_schemas() {
    if !require("kubectl") || !require("kubernetes-validate") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for overlay in OVERLAYS {
        let file = dir
            .path()
            .join(format!("{}.yaml", overlay.replace('/', "-")));
        std::fs::write(&file, render(overlay)).unwrap();
        for version in KUBERNETES_VERSIONS {
            let (ok, out) = validate(&file, version);
            assert!(ok, "deploy/{overlay} against Kubernetes {version}:\n{out}");
            // Every object was checked, none skipped for want of a schema.
            let passed = out.matches(" passed for resource ").count();
            assert_eq!(
                passed,
                objects(&std::fs::read_to_string(&file).unwrap()).len(),
                "{out}"
            );
        }
    }
    // The validator really validates, offline: a misspelt field and a wrong type fail.
    let bad = dir.path().join("bad.yaml");
    let daemonset = render("node-local").replace("hostNetwork: true", "hostNetwrk: true");
    std::fs::write(&bad, &daemonset).unwrap();
    let (ok, out) = validate(&bad, KUBERNETES_VERSIONS[0]);
    assert!(!ok, "a misspelt field must fail strict validation:\n{out}");
    std::fs::write(
        &bad,
        render("node-local").replace("maxSurge: 1", "maxSurge: [1]"),
    )
    .unwrap();
    let (ok, out) = validate(&bad, KUBERNETES_VERSIONS[0]);
    assert!(!ok, "a list where a number belongs must fail:\n{out}");
}

#[test]
fn node_local_daemonset_keeps_its_contract() {
    if !require("kubectl") {
        return;
    }
    let objs = objects(&render("node-local"));
    let ds = find(&objs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["dnsPolicy"], "Default");
    assert_eq!(pod["priorityClassName"], "system-node-critical");
    assert!(
        pod["tolerations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["operator"] == "Exists" && t.get("key").is_none()),
        "tolerates every taint"
    );
    let rolling = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(rolling["maxSurge"], 1);
    assert_eq!(rolling["maxUnavailable"], 0);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );

    // With tolerate-all, a Windows node would get a pod that can never start.
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux");

    let c = &pod["containers"][0];
    // On the host network a declared port would become a hostPort and block the surge pod.
    assert!(c.get("ports").is_none(), "no container ports: {c}");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    let added: BTreeSet<&str> = sc["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(added, BTreeSet::from(["NET_ADMIN", "NET_BIND_SERVICE"]));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path);
        assert_eq!(c[probe]["httpGet"]["port"], 9255);
    }
    // Liveness goes through the node-local address: it fails when the address is gone.
    assert_eq!(c["livenessProbe"]["httpGet"]["host"], "169.254.20.10");
    // Requests only for CPU (CFS throttling hurts DNS p99); memory stays bounded.
    assert!(
        c["resources"]["requests"]["cpu"].is_string(),
        "requests.cpu"
    );
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
    assert!(
        c["resources"]["limits"].get("cpu").is_none(),
        "no CPU limit: {}",
        c["resources"]
    );

    // The volume names the generated (hashed) ConfigMap, whose config is valid and sets up
    // the node-local address.
    let cm = find(&objs, "ConfigMap");
    assert_eq!(
        pod["volumes"][0]["configMap"]["name"],
        cm["metadata"]["name"]
    );
    let conf = cm["data"]["ndots.yaml"].as_str().unwrap();
    assert!(conf.contains("169.254.20.10") && conf.contains("enabled: true"));
    // Dual-stack: an IPv6 node-local address beside the IPv4 one, and the firewall on.
    assert!(conf.contains("\"fd00::a9fe:140a\""), "{conf}");
    assert!(conf.contains("firewall: true"), "{conf}");
    let dir = tempfile::tempdir().unwrap();
    check_config(&objs, "ndots.yaml", dir.path());

    // The headless metrics Service selects the DaemonSet's pods.
    let svc = find_named(&objs, "Service", "ndots-metrics");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let labels = &ds["spec"]["template"]["metadata"]["labels"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "Service selector {k}");
    }
}

#[test]
fn sidecar_keeps_the_pods_search_list_and_needs_no_capability() {
    if !require("kubectl") {
        return;
    }
    let objs = objects(&render("sidecar"));
    let pod = &find(&objs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["dnsPolicy"], "None");
    assert_eq!(
        pod["dnsConfig"]["nameservers"],
        serde_json::json!(["127.0.0.1"])
    );
    let searches: Vec<&str> = pod["dnsConfig"]["searches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        searches,
        [
            "default.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local"
        ],
        "the search list a pod in `default` has"
    );
    let proxy = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "ndots")
        .expect("the ndots sidecar");
    assert_eq!(proxy["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(
        proxy["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert!(proxy["securityContext"]["capabilities"]
        .get("add")
        .is_none());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let conf = find(&objs, "ConfigMap")["data"]["ndots.yaml"]
        .as_str()
        .unwrap();
    assert!(conf.contains("127.0.0.1:53"), "{conf}");
    let dir = tempfile::tempdir().unwrap();
    check_config(&objs, "ndots.yaml", dir.path());
}

/// ServiceMonitor and PodMonitor are CRDs (monitoring.coreos.com) that kubernetes-validate has
/// no schema for; instead check that they find what they should scrape.
#[test]
fn monitors_select_the_proxies_they_scrape() {
    if !require("kubectl") {
        return;
    }
    let mon = objects(&render("monitoring"));
    let node = objects(&render("node-local"));
    let side = objects(&render("sidecar"));

    let sm = find(&mon, "ServiceMonitor");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    // The labels Prometheus picks monitors by are set in the kustomization, on the monitors'
    // metadata, and never leak into what they select.
    assert_eq!(
        sm["metadata"]["labels"]["app.kubernetes.io/part-of"],
        "ndots"
    );
    assert!(sm["spec"]["selector"]["matchLabels"]
        .get("app.kubernetes.io/part-of")
        .is_none());
    let svc = find_named(&node, "Service", "ndots-metrics");
    assert_eq!(sm["metadata"]["namespace"], svc["metadata"]["namespace"]);
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &svc["metadata"]["labels"][k], v,
            "ServiceMonitor selects by {k}"
        );
    }
    let port = &sm["spec"]["endpoints"][0]["port"];
    assert!(
        svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| &p["name"] == port),
        "the Service has the port the ServiceMonitor names"
    );

    let pm = find(&mon, "PodMonitor");
    let dep = find(&side, "Deployment");
    let labels = &dep["spec"]["template"]["metadata"]["labels"];
    for (k, v) in pm["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "PodMonitor selects pods by {k}");
    }
    let port = &pm["spec"]["podMetricsEndpoints"][0]["port"];
    let containers = dep["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap();
    assert!(
        containers.iter().any(|c| c["ports"]
            .as_array()
            .is_some_and(|ps| ps.iter().any(|p| &p["name"] == port))),
        "a container has the port the PodMonitor names"
    );
}

/// The PrometheusRule's alerts pass `promtool check rules`, and each one is shown firing (and
/// quiet on healthy input) by `promtool test rules` with deploy/monitoring/alerts.test.yaml.
#[test]
fn alert_rules_pass_promtool_test_rules() {
    if !require("kubectl") || !require("promtool") {
        return;
    }
    let mon = objects(&render("monitoring"));
    let rule = find(&mon, "PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        yaml_serde::to_string(&rule["spec"]).unwrap(),
    )
    .unwrap();
    let tests = std::fs::read_to_string(root().join("deploy/monitoring/alerts.test.yaml")).unwrap();
    std::fs::write(dir.path().join("alerts.test.yaml"), &tests).unwrap();
    let (ok, out) = output(
        Command::new("promtool")
            .args(["check", "rules", "rules.yaml"])
            .current_dir(dir.path()),
    );
    assert!(ok, "promtool check rules:\n{out}");
    let (ok, out) = output(
        Command::new("promtool")
            .args(["test", "rules", "alerts.test.yaml"])
            .current_dir(dir.path()),
    );
    assert!(ok, "promtool test rules:\n{out}");

    // Every alert has a test, and every series an alert reads is one the proxy exports (or
    // Prometheus's own / kube-state-metrics').
    let test_doc: Value = yaml_serde::from_str(&tests).unwrap();
    let tested: BTreeSet<&str> = test_doc["tests"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["alert_rule_test"].as_array().unwrap())
        .filter(|a| !a["exp_alerts"].as_array().unwrap().is_empty())
        .map(|a| a["alertname"].as_str().unwrap())
        .collect();
    let mut alerts = Vec::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap();
            assert!(
                tested.contains(name),
                "{name} is never shown firing in alerts.test.yaml"
            );
            let expr = r["expr"].as_str().unwrap();
            for m in metric_names(expr) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| m.strip_suffix(s))
                    .unwrap_or(&m);
                assert!(
                    ndots::metrics::ALL.iter().any(|i| i.name == base),
                    "{name} reads {m}, which the proxy does not export"
                );
            }
            alerts.push(name);
        }
    }
    for needed in [
        "NdotsUpstreamUnhealthy",
        "NdotsServfailRatioHigh",
        "NdotsServingStale",
        "NdotsOverloadDrops",
        "NdotsUdpReceiveDrops",
        "NdotsMemoryNearLimit",
        "NdotsAmplificationHigh",
    ] {
        assert!(alerts.contains(&needed), "no {needed} in {alerts:?}");
    }
}

/// kube-prometheus-stack selects monitors and rules by a label (`release`): the kustomization
/// sets it in one place, on every object; the dashboard ships as a ConfigMap the Grafana
/// sidecar picks up, holding deploy/dashboards/ndots.json as it is.
#[test]
fn monitoring_labels_come_from_the_kustomization_and_the_dashboard_ships_for_the_sidecar() {
    if !require("kubectl") {
        return;
    }
    let kust: Value = yaml_serde::from_str(
        &std::fs::read_to_string(root().join("deploy/monitoring/kustomization.yaml")).unwrap(),
    )
    .unwrap();
    let pairs = kust["labels"][0]["pairs"]
        .as_object()
        .expect("labels[0].pairs");
    assert!(pairs.contains_key("release"), "{pairs:?}");
    let mon = objects(&render("monitoring"));
    for kind in ["ServiceMonitor", "PodMonitor", "PrometheusRule"] {
        let labels = &find(&mon, kind)["metadata"]["labels"];
        for (k, v) in pairs {
            assert_eq!(&labels[k], v, "{kind} label {k}");
        }
    }
    // The selectors are not touched by the label (includeSelectors: false).
    let sm = find(&mon, "ServiceMonitor");
    assert!(sm["spec"]["selector"]["matchLabels"]
        .get("release")
        .is_none());

    let cm = find(&mon, "ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let file = std::fs::read_to_string(root().join("deploy/dashboards/ndots.json")).unwrap();
    assert_eq!(cm["data"]["ndots.json"].as_str(), Some(file.as_str()));
}

#[test]
fn dockerfile_passes_hadolint_and_builds_with_the_static_script() {
    if !require("hadolint") {
        return;
    }
    let dockerfile = root().join("Dockerfile");
    // `style` is the lowest threshold: every finding fails. No rule is ignored (no pragma, no
    // config file).
    let (ok, out) = output(
        Command::new("hadolint")
            .args(["--failure-threshold", "style", "--disable-ignore-pragma"])
            .arg(&dockerfile),
    );
    assert!(ok, "hadolint:\n{out}");
    let text = std::fs::read_to_string(&dockerfile).unwrap();
    let stages: Vec<&str> = text.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "multi-stage: {stages:?}");
    assert_eq!(
        stages[1], "FROM scratch",
        "the final image has nothing but ndots"
    );
    assert!(
        text.contains("scripts/build-static.sh"),
        "the builder runs the tested script"
    );
    let user = text
        .lines()
        .rfind(|l| l.starts_with("USER "))
        .expect("a USER");
    assert!(!user.contains(" 0") && !user.contains("root"), "{user}");
    assert!(text.contains("COPY configs/image.yaml /etc/ndots/ndots.yaml"));
    // The configuration the image carries is valid.
    let (ok, out) = output(
        Command::new(env!("CARGO_BIN_EXE_ndots"))
            .args(["proxy", "--check-config"])
            .arg(root().join("configs/image.yaml")),
    );
    assert!(ok, "configs/image.yaml:\n{out}");
}

/// Every metric the dashboard queries is one the proxy exports (`metrics::ALL`), and the
/// panels the issue asks for are there.
#[test]
fn dashboard_queries_only_exported_metrics() {
    let text = std::fs::read_to_string(root().join("deploy/dashboards/ndots.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dash, &mut exprs);
    assert!(exprs.len() >= 10, "{} queries", exprs.len());

    let exported: BTreeSet<&str> = ndots::metrics::ALL.iter().map(|m| m.name).collect();
    let mut used = BTreeSet::new();
    for e in &exprs {
        for name in metric_names(e) {
            // A histogram is queried through its _bucket, _sum and _count series.
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| {
                    ndots::metrics::ALL
                        .iter()
                        .any(|m| m.name == *b && m.kind == "histogram")
                })
                .unwrap_or(&name)
                .to_string();
            assert!(
                exported.contains(base.as_str()),
                "the dashboard queries {name}, which the proxy does not export: {e}"
            );
            used.insert(base);
        }
    }
    for needed in [
        "ndots_dns_responses_total",
        "ndots_cache_hits_total",
        "ndots_cache_misses_total",
        "ndots_upstream_request_duration_seconds",
        "ndots_lookup_queries",
        "ndots_wasted_queries_total",
        "ndots_shortcut_answers_total",
    ] {
        assert!(used.contains(needed), "no panel over {needed}");
    }
    // Lookup latency, upstream health and drops have their panels.
    for needed in [
        "ndots_lookup_duration_seconds",
        "ndots_dns_request_duration_seconds",
        "ndots_upstream_healthy",
        "ndots_udp_receive_drops_total",
        "ndots_tracker_dropped_events_total",
        "ndots_overload_drops_total",
    ] {
        assert!(used.contains(needed), "no panel over {needed}");
    }
    let titles: Vec<&str> = dash["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["title"].as_str())
        .collect();
    assert!(titles.contains(&"Top namespaces"), "{titles:?}");
    // cluster, job and node variables, and every query filtered by them.
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for v in ["datasource", "cluster", "job", "node", "instance"] {
        assert!(vars.contains(&v), "no ${v} variable: {vars:?}");
    }
    for e in exprs
        .iter()
        .filter(|e| e.contains("ndots_") && !e.starts_with("label_values"))
    {
        for v in ["cluster", "job", "node", "instance"] {
            assert!(
                e.contains(&format!("{v}=~\"${v}\"")),
                "a query not filtered by ${v}: {e}"
            );
        }
    }
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The `ndots_...` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("ndots_") {
        let start = i + at;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        let preceded = start > 0 && (b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        if !preceded {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// A bad `node_local` value is a configuration error like any other: exit 2, key and line named.
#[test]
fn node_local_bad_address_exits_2_naming_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "upstreams: [{zone: ., servers: [\"127.0.0.1\"]}]\nnode_local:\n  enabled: true\n  \
         addresses: [\"169.254.20.10\", \"169.254.20.1O\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ndots"))
        .args(["proxy", "--check-config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("node_local.addresses")
            && err.contains("169.254.20.1O")
            && err.contains("line 4"),
        "{err}"
    );
}

/// The DaemonSet's surge: a second proxy with the same DNS and admin ports starts while the
/// first still runs (SO_REUSEPORT on every listener), and serves both after the first drains.
#[test]
fn surge_pod_binds_the_same_dns_and_admin_ports() {
    if !require("dig") {
        return;
    }
    let up = common::upstream::Upstream::start();
    up.add(
        "surge.example.",
        1,
        common::upstream::Rec::A(std::net::Ipv4Addr::new(192, 0, 2, 7), 60),
    );
    let dns = common::tools::free_port();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", common::tools::free_port())
        .parse()
        .unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_ndots"))
            .args(["proxy", "--listen", &format!("127.0.0.1:{dns}")])
            .args(["--upstream", &up.addr.to_string()])
            .args(["--admin", &admin.to_string()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let healthy = || {
        (0..100).any(|_| {
            let ok = common::tools::http_get(admin, "/healthz").is_some_and(|(c, _)| c == 200);
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            ok
        })
    };
    let mut old = start();
    assert!(healthy(), "the first proxy serves its admin port");
    let mut new = start();
    unsafe { libc::kill(old.id() as i32, libc::SIGTERM) };
    assert!(old.wait().unwrap().success());
    // Only the surge proxy can answer now; had it failed to bind the shared ports, it would
    // have exited.
    assert!(healthy(), "the surge proxy answers on the admin port alone");
    assert!(new.try_wait().unwrap().is_none(), "the surge proxy runs");
    let out = Command::new("dig")
        .args(["+short", "+tries=3", "+time=1", "@127.0.0.1", "-p"])
        .arg(dns.to_string())
        .args(["surge.example.", "A"])
        .output()
        .unwrap();
    let _ = new.kill();
    let _ = new.wait();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "192.0.2.7");
}

/// deploy/collect: CoreDNS's `dnstap tcp://ndots-collect.kube-system:6000 full` reaches the
/// container's `collect --listen tcp:0.0.0.0:6000`, and the shipped configuration starts it.
#[test]
fn collect_overlay_receives_where_the_corefile_sends() {
    if !require("kubectl") {
        return;
    }
    let objs = objects(&render("collect"));
    let svc = find(&objs, "Service");
    assert_eq!(svc["metadata"]["name"], "ndots-collect");
    assert_eq!(svc["metadata"]["namespace"], "kube-system");
    let port = svc["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "dnstap")
        .expect("a dnstap port");
    assert_eq!(port["port"], 6000);
    let deploy = find(&objs, "Deployment");
    let c = &deploy["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(&args[..3], ["collect", "--listen", "tcp:0.0.0.0:6000"]);
    let cport = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == port["targetPort"])
        .expect("the Service's targetPort names a container port");
    assert_eq!(cport["containerPort"], 6000);
    assert!(
        deploy["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            == svc["spec"]["selector"]["app.kubernetes.io/name"]
    );
    // The shipped ndots.yaml starts a collector (no upstreams needed, none in the file).
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ndots.yaml");
    std::fs::write(
        &file,
        find(&objs, "ConfigMap")["data"]["ndots.yaml"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", common::tools::free_port())
        .parse()
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ndots"))
        .args(["collect", "--listen", "tcp:127.0.0.1:0", "--config"])
        .arg(&file)
        .args(["--admin", &admin.to_string()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut ready = None;
    while std::time::Instant::now() < deadline {
        if let Some(r) = common::tools::http_get(admin, "/readyz") {
            ready = Some(r.0);
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("collect with the shipped ndots.yaml exited: {status}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        ready,
        Some(200),
        "collect with the shipped ndots.yaml is ready"
    );
}

/// Every dotted-quad IPv4 literal in a text.
fn ipv4_literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in text.split(|c: char| !(c.is_ascii_digit() || c == '.')) {
        let word = word.trim_matches('.');
        if word.split('.').count() == 4 && word.parse::<std::net::Ipv4Addr>().is_ok() {
            out.push(word.to_string());
        }
    }
    out
}

/// Issue 17: no overlay writes a cluster DNS address (10.96.0.10 on kubeadm, 10.100.0.10 or
/// 172.20.0.10 on EKS, ...): the node-local proxy finds the `kube-dns-upstream` Service through
/// the variable Kubernetes sets, the sidecar through a ConfigMap the operator fills.
#[test]
fn no_overlay_names_a_cluster_dns_address() {
    if !require("kubectl") {
        return;
    }
    // Addresses that are not a cluster's: the node-local address, loopback, any.
    let fixed = ["169.254.20.10", "127.0.0.1", "0.0.0.0"];
    for overlay in OVERLAYS {
        let text = render(overlay);
        let literals: Vec<String> = ipv4_literals(&text)
            .into_iter()
            .filter(|a| !fixed.contains(&a.as_str()))
            .collect();
        assert!(
            literals.is_empty(),
            "deploy/{overlay} writes addresses {literals:?}"
        );
    }
    // The check itself finds one.
    assert_eq!(
        ipv4_literals("servers: [\"10.96.0.10:53\"]"),
        ["10.96.0.10"]
    );

    let objs = objects(&render("node-local"));
    let up = find_named(&objs, "Service", "kube-dns-upstream");
    assert_eq!(
        up["spec"]["selector"],
        serde_json::json!({"k8s-app": "kube-dns"}),
        "selects the cluster DNS pods and nothing of ours"
    );
    assert_eq!(up["metadata"]["namespace"], "kube-system");
    let ports: BTreeSet<(i64, &str)> = up["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["port"].as_i64().unwrap(), p["protocol"].as_str().unwrap()))
        .collect();
    assert_eq!(ports, BTreeSet::from([(53, "TCP"), (53, "UDP")]));
    // The variable Kubernetes derives from that name is the one the configuration names.
    let var = format!(
        "{}_SERVICE_HOST",
        up["metadata"]["name"]
            .as_str()
            .unwrap()
            .to_uppercase()
            .replace('-', "_")
    );
    let conf = find(&objs, "ConfigMap")["data"]["ndots.yaml"]
        .as_str()
        .unwrap();
    assert_eq!(conf.matches(&format!("${{{var}}}")).count(), 3, "{conf}");
    let pod = &find(&objs, "DaemonSet")["spec"]["template"]["spec"];
    assert_ne!(pod["enableServiceLinks"], false);
}

/// `${VAR}` unset is a configuration error naming the variable (exit 2), as the proxy in a
/// pod started before its Service would report it.
#[test]
fn unset_upstream_variable_is_a_config_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("node-local.yaml");
    std::fs::copy(root().join("deploy/node-local/ndots.yaml"), &conf).unwrap();
    let run = |env: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ndots"));
        cmd.args(["proxy", "--check-config"])
            .arg(&conf)
            .env_remove("KUBE_DNS_UPSTREAM_SERVICE_HOST");
        if let Some(v) = env {
            cmd.env("KUBE_DNS_UPSTREAM_SERVICE_HOST", v);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KUBE_DNS_UPSTREAM_SERVICE_HOST") && err.contains("not set"),
        "{err}"
    );
    assert!(err.contains("upstreams[0].servers"), "{err}");
    let out = run(Some(""));
    assert_eq!(out.status.code(), Some(2), "empty is no better than unset");
    let out = run(Some("fd00:10:96::a"));
    assert!(
        out.status.success(),
        "an IPv6 ClusterIP works: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Each cloud overlay is the node-local one plus its profile, and the profile is one the
/// proxy accepts with the shipped configuration.
#[test]
fn cloud_overlays_set_their_profile() {
    if !require("kubectl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for cloud in ["aws", "gcp", "azure", "kind"] {
        let objs = objects(&render(&format!("clouds/{cloud}")));
        let args = &find(&objs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]["args"];
        let flag = format!("--cluster-profile={cloud}");
        assert_eq!(
            args.as_array().unwrap().last().unwrap(),
            &Value::from(flag.clone())
        );
        check_config_with(&objs, "ndots.yaml", dir.path(), &[&flag]);
    }
}

/// The variable is read again at each reload: a reload that names an unset variable is
/// rejected (counted, logged with the variable's name) and the running configuration keeps
/// serving; one whose variables are set applies.
#[test]
fn reload_naming_an_unset_variable_is_rejected_and_the_old_config_serves() {
    let up = common::upstream::Upstream::start();
    let admin: std::net::SocketAddr = format!("127.0.0.1:{}", common::tools::free_port())
        .parse()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("ndots.yaml");
    let log = dir.path().join("proxy.log");
    let write = |var: &str| {
        std::fs::write(
            &cfg,
            format!(
                "listen: [\"127.0.0.1:0\"]\nadmin: \"{admin}\"\n\
                 upstreams: [{{zone: ., servers: [\"${{{var}}}\"]}}]\n"
            ),
        )
        .unwrap()
    };
    write("NDOTS_TEST_UPSTREAM");
    let mut proxy = Command::new(env!("CARGO_BIN_EXE_ndots"))
        .args(["proxy", "--config"])
        .arg(&cfg)
        .env("NDOTS_TEST_UPSTREAM", up.addr.to_string())
        .env_remove("NDOTS_TEST_UNSET_UPSTREAM")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let reloads = |result: &str| -> f64 {
        common::tools::http_get(admin, "/metrics")
            .map(|(_, m)| {
                m.lines()
                    .filter(|l| {
                        l.starts_with(&format!(
                            "ndots_config_reloads_total{{result=\"{result}\"}}"
                        ))
                    })
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            })
            .unwrap_or(0.0)
    };
    let until = |f: &dyn Fn() -> bool| {
        (0..100).any(|_| {
            let ok = f();
            if !ok {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            ok
        })
    };
    // Ready: the expanded upstream answered its probe.
    assert!(
        until(&|| common::tools::http_get(admin, "/readyz").is_some_and(|(c, _)| c == 200)),
        "the proxy started with the expanded upstream; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    write("NDOTS_TEST_UNSET_UPSTREAM");
    unsafe { libc::kill(proxy.id() as i32, libc::SIGHUP) };
    assert!(
        until(&|| reloads("failure") >= 1.0),
        "the reload is refused"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("NDOTS_TEST_UNSET_UPSTREAM"), "{text}");
    assert_eq!(
        common::tools::http_get(admin, "/readyz").map(|(c, _)| c),
        Some(200),
        "the old configuration keeps serving"
    );
    write("NDOTS_TEST_UPSTREAM");
    unsafe { libc::kill(proxy.id() as i32, libc::SIGHUP) };
    assert!(until(&|| reloads("success") >= 1.0), "set again: applied");
    let _ = proxy.kill();
    let _ = proxy.wait();
}

/// `--cluster-profile aws` on a node whose resolv.conf says `search
/// us-west-2.compute.internal corp.example.com` (in a private mount namespace): the node
/// domain becomes a search domain of the model and `amazonaws.com` a shortcut zone, so
/// `sts.amazonaws.com.us-west-2.compute.internal` is answered NXDOMAIN on the node and never
/// reaches the upstream (the cloud resolver); under `--cluster-profile kind` it does.
#[test]
fn aws_profile_answers_node_domain_expansions_on_the_node() {
    let Some(ns) = common::netns::enter("aws_profile_answers_node_domain_expansions_on_the_node")
    else {
        return;
    };
    if !require("dig") {
        return;
    }
    ns.set_resolv_conf(
        "nameserver 127.0.0.1\nsearch us-west-2.compute.internal corp.example.com\n",
    );
    let up = common::upstream::Upstream::start();
    const EXPANSION: &str = "sts.amazonaws.com.us-west-2.compute.internal.";
    let ask = |profile: &str| -> String {
        let port = common::tools::free_port();
        let mut proxy = Command::new(env!("CARGO_BIN_EXE_ndots"))
            .args(["proxy", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--upstream", &up.addr.to_string()])
            .args([
                "--admin",
                &format!("127.0.0.1:{}", common::tools::free_port()),
            ])
            .arg(format!("--cluster-profile={profile}"))
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let answer = (0..50).find_map(|_| {
            let out = Command::new("dig")
                .args(["+tries=1", "+time=1", "@127.0.0.1", "-p", &port.to_string()])
                .args([EXPANSION, "A"])
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if text.contains("status:") {
                Some(text)
            } else {
                std::thread::sleep(std::time::Duration::from_millis(100));
                None
            }
        });
        let _ = proxy.kill();
        let _ = proxy.wait();
        answer.expect("the proxy answered")
    };
    let aws = ask("aws");
    assert!(aws.contains("status: NXDOMAIN"), "{aws}");
    assert_eq!(
        up.count(EXPANSION, 1),
        0,
        "the aws profile answers the node-domain expansion on the node"
    );
    ask("kind");
    assert!(
        up.count(EXPANSION, 1) >= 1,
        "without the platform's node domain and zones it goes upstream"
    );
}

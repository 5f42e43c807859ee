//! deploy/: the kustomize overlays render and validate offline against several Kubernetes
//! versions, agree with the binary (ports, settings, image, identity), and a rehearsal in
//! Docker does what the StatefulSet does, since no cluster can run here.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::tools::tool;
use kademlia::Settings;
use serde_json::Value;

const OVERLAYS: [(&str, u64); 2] = [("dev", 3), ("production", 20)];
/// Kubernetes versions whose schemas every overlay must pass (strict).
const K8S_VERSIONS: [&str; 3] = ["1.28.0", "1.32.0", "1.37.0"];

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

fn render(overlay: &str) -> String {
    let out = Command::new("kubectl")
        .args([
            "kustomize",
            &format!("{}/deploy/overlays/{overlay}", root()),
        ])
        .output()
        .expect("kubectl is needed to render deploy/ (scripts/setup-tools.sh checks for it)");
    assert!(
        out.status.success(),
        "kustomize {overlay}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Parses multi-document YAML with the PyYAML that kubernetes-validate brings.
fn to_json(yaml: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = Command::new(tool("python"))
        .args(["-c", "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the tools virtualenv's python (scripts/setup-tools.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(yaml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    match serde_json::from_slice(&out.stdout).unwrap() {
        Value::Array(docs) => docs,
        other => panic!("not a list of documents: {other}"),
    }
}

fn validate(yaml: &str, version: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("manifests.yaml");
    std::fs::write(&path, yaml).unwrap();
    Command::new(tool("kubernetes-validate"))
        .args(["--strict", "--no-warn", "-k", version])
        .arg(&path)
        .output()
        .expect("run kubernetes-validate (scripts/setup-tools.sh installs it)")
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn every_overlay_renders_and_passes_strict_validation_on_several_versions() {
    for (overlay, _) in OVERLAYS {
        let yaml = render(overlay);
        let kinds = to_json(&yaml).len();
        eprintln!("{overlay}: {} bytes, {kinds} resources", yaml.len());
        for v in K8S_VERSIONS {
            let out = validate(&yaml, v);
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "{overlay} fails on Kubernetes {v}:\n{text}"
            );
            assert_eq!(
                text.matches(" passed ").count(),
                kinds,
                "{overlay} on {v}:\n{text}"
            );
            eprintln!("{overlay}: all {kinds} resources pass Kubernetes {v} (strict)");
        }
    }
}

#[test]
fn a_broken_manifest_fails_validation() {
    let yaml = render("dev");
    assert!(validate(&yaml, "1.37.0").status.success());
    let unknown_field = yaml.replacen(
        "podManagementPolicy: Parallel",
        "podManagementPolicy: Parallel\n  replicaz: 3",
        1,
    );
    assert_ne!(unknown_field, yaml);
    assert!(
        !validate(&unknown_field, "1.37.0").status.success(),
        "an unknown field passed strict validation"
    );
    let wrong_type = yaml.replacen("replicas: 3", "replicas: three", 1);
    assert_ne!(wrong_type, yaml);
    assert!(
        !validate(&wrong_type, "1.37.0").status.success(),
        "a string replica count passed validation"
    );
}

/// Environment variable names the node reads: P2P_REMOTE_HOST and KADEMLIA_<SETTING>.
fn node_env_names() -> BTreeSet<String> {
    let Value::Object(fields) = serde_json::to_value(Settings::default()).unwrap() else {
        panic!("settings are a struct")
    };
    let mut names: BTreeSet<String> = fields
        .keys()
        .filter(|k| *k != "remote_host")
        .map(|k| format!("KADEMLIA_{}", k.to_uppercase()))
        .collect();
    names.insert("P2P_REMOTE_HOST".into());
    names
}

/// The pod's environment as the kubelet would build it for pod `pod` in `namespace`:
/// the ConfigMap (envFrom), then `env` with fieldRefs filled and $(VAR) references expanded.
fn pod_env(docs: &[Value], pod: &str, namespace: &str) -> Vec<(String, String)> {
    let sts = find(docs, "StatefulSet", "kademlia");
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    let cm_name = container["envFrom"][0]["configMapRef"]["name"]
        .as_str()
        .unwrap();
    let cm = find(docs, "ConfigMap", cm_name);
    let mut env: Vec<(String, String)> = cm["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            let mut v = v.to_string();
            for (k, val) in &env {
                v = v.replace(&format!("$({k})"), val);
            }
            v
        } else {
            match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.name") => pod.to_string(),
                Some("metadata.namespace") => namespace.to_string(),
                other => panic!("unexpected fieldRef {other:?}"),
            }
        };
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    }
    env
}

#[test]
fn manifests_agree_with_the_binary() {
    let known = node_env_names();
    let dockerfile = std::fs::read_to_string(format!("{}/Dockerfile", root())).unwrap();
    let image_uid: u64 = dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .and_then(|u| u.split(':').next()?.parse().ok())
        .unwrap();
    for (overlay, replicas) in OVERLAYS {
        let docs = to_json(&render(overlay));
        let sts = find(&docs, "StatefulSet", "kademlia");
        let spec = &sts["spec"];
        let pod = &spec["template"]["spec"];
        let c = &pod["containers"][0];
        let ns = sts["metadata"]["namespace"].as_str().unwrap();
        assert_eq!(spec["replicas"], replicas, "{overlay}");
        assert_eq!(spec["podManagementPolicy"], "Parallel");

        // The image is the one scripts/build-image.sh tags.
        assert_eq!(
            c["image"],
            format!("kademlia:{}", env!("CARGO_PKG_VERSION")),
            "{overlay}"
        );

        // Every variable the manifests set is one the node reads (or a helper that another
        // variable expands), and together they make valid settings.
        let cm = find(
            &docs,
            "ConfigMap",
            c["envFrom"][0]["configMapRef"]["name"].as_str().unwrap(),
        );
        let env_entries = c["env"].as_array().unwrap();
        let referenced: String = env_entries
            .iter()
            .filter_map(|e| e["value"].as_str())
            .collect();
        let mut set: Vec<String> = cm["data"].as_object().unwrap().keys().cloned().collect();
        set.extend(
            env_entries
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_string()),
        );
        for name in &set {
            let helper = referenced.contains(&format!("$({name})"));
            assert!(
                known.contains(name) || helper,
                "{overlay}: {name} is not a setting the node reads"
            );
        }
        let env = pod_env(&docs, "kademlia-0", ns);
        let overrides: Vec<(String, String)> = env
            .iter()
            .filter(|(k, _)| known.contains(k))
            .map(|(k, v)| {
                let key = if k == "P2P_REMOTE_HOST" {
                    "remote_host".to_string()
                } else {
                    k.trim_start_matches("KADEMLIA_").to_lowercase()
                };
                (key, v.clone())
            })
            .collect();
        let settings = Settings::load(None, &overrides)
            .unwrap_or_else(|e| panic!("{overlay}: the manifests' settings are refused: {e}"));

        // The data dir is a volume from a claim template, so it outlives the pod.
        let claims: Vec<&str> = spec["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["metadata"]["name"].as_str())
            .collect();
        assert!(
            c["volumeMounts"].as_array().into_iter().flatten().any(|m| {
                m["mountPath"] == settings.data_dir.as_str()
                    && claims.contains(&m["name"].as_str().unwrap_or_default())
            }),
            "{overlay}: data_dir {:?} is not a mounted volumeClaimTemplate",
            settings.data_dir
        );

        // Probes and the client port use `port`; peers use `peer_port`.
        let port = u64::from(settings.port);
        let peer_port = u64::from(settings.peer_port);
        assert_ne!(peer_port, 0, "{overlay}: peers have their own port");
        let container_port = |name: &str| {
            c["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{overlay}: no container port {name}"))["containerPort"]
                .clone()
        };
        assert_eq!(container_port("grpc"), port);
        assert_eq!(container_port("peer"), peer_port);
        // Prometheus finds /metrics on the HTTP port, through the pod's annotations.
        let http_port = u64::from(settings.http_port);
        assert_ne!(http_port, 0, "{overlay}: the HTTP listener is on");
        assert_eq!(container_port("metrics"), http_port);
        let annotations = &spec["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true", "{overlay}");
        assert_eq!(annotations["prometheus.io/port"], http_port.to_string());
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
        assert_eq!(
            c["readinessProbe"]["grpc"]["port"], port,
            "{overlay}: readiness probe port"
        );
        assert_eq!(
            c["livenessProbe"]["grpc"]["port"], port,
            "{overlay}: liveness probe port"
        );
        assert_eq!(
            c["livenessProbe"]["grpc"]["service"],
            kademlia::net::grpc::server::LIVENESS_SERVICE
        );
        assert!(
            c["readinessProbe"]["grpc"]["service"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "readiness = joined (service \"\")"
        );

        // Identity and addressing through the headless Service, on the peer port.
        let headless = find(&docs, "Service", spec["serviceName"].as_str().unwrap());
        assert_eq!(headless["spec"]["clusterIP"], "None");
        assert_eq!(headless["spec"]["publishNotReadyAddresses"], true);
        let headless_name = headless["metadata"]["name"].as_str().unwrap();
        assert_eq!(
            settings.remote_host, headless_name,
            "P2P_REMOTE_HOST points into the headless service"
        );
        assert_eq!(
            settings.advertise_addr,
            format!("kademlia-0.{headless_name}.{ns}.svc:{peer_port}")
        );
        assert_eq!(headless["spec"]["ports"][0]["port"], peer_port);
        assert_eq!(headless["spec"]["ports"][0]["targetPort"], "peer");
        let client = find(&docs, "Service", "kademlia");
        assert_eq!(client["spec"]["ports"][0]["port"], port);

        // Peer mTLS: the CA comes from the Secret mounted where the settings look for it,
        // and the id from the node's key (not pinned).
        assert!(
            settings.node_id.is_empty(),
            "{overlay}: node_id is the key's"
        );
        let ca_dir = std::path::Path::new(&settings.tls_ca_cert)
            .parent()
            .unwrap();
        assert_eq!(
            std::path::Path::new(&settings.tls_ca_key).parent().unwrap(),
            ca_dir
        );
        let ca_mount = c["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == ca_dir.to_str().unwrap())
            .unwrap_or_else(|| panic!("{overlay}: nothing mounted at {ca_dir:?}"));
        assert_eq!(ca_mount["readOnly"], true);
        let volume = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == ca_mount["name"])
            .unwrap();
        assert_eq!(volume["secret"]["secretName"], "kademlia-ca");

        // The NetworkPolicy admits the peer port only from this StatefulSet's pods.
        let policy = find(&docs, "NetworkPolicy", "kademlia");
        let labels = &spec["template"]["metadata"]["labels"];
        for (k, v) in policy["spec"]["podSelector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(&labels[k], v, "{overlay}: the policy selects the pods");
        }
        let rules = policy["spec"]["ingress"].as_array().unwrap();
        let peer_rules: Vec<&Value> = rules
            .iter()
            .filter(|r| {
                r["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == "peer")
            })
            .collect();
        assert_eq!(peer_rules.len(), 1, "{overlay}: one rule for the peer port");
        let from = peer_rules[0]["from"].as_array().unwrap();
        assert!(
            !from.is_empty(),
            "{overlay}: the peer port must not be open to all"
        );
        for source in from {
            let selected = source["podSelector"]["matchLabels"].as_object().unwrap();
            assert!(source["namespaceSelector"].is_null() && source["ipBlock"].is_null());
            for (k, v) in selected {
                assert_eq!(
                    &labels[k], v,
                    "{overlay}: peers are this StatefulSet's pods"
                );
            }
        }

        // Termination grace covers the node's drain.
        assert!(
            pod["terminationGracePeriodSeconds"].as_u64().unwrap() > settings.drain_timeout_secs,
            "{overlay}"
        );

        // Security: non-root as the image's user, read-only root, no capabilities.
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], image_uid);
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
        assert_eq!(
            c["securityContext"]["capabilities"]["drop"],
            serde_json::json!(["ALL"])
        );
        assert!(
            c["resources"]["limits"]["memory"].is_string()
                && c["resources"]["requests"]["cpu"].is_string()
        );

        // The disruption budget selects these pods.
        let pdb = find(&docs, "PodDisruptionBudget", "kademlia");
        for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
            assert_eq!(&labels[k], v, "{overlay}: PDB selector {k}");
        }
        assert_eq!(
            spec["selector"]["matchLabels"],
            pdb["spec"]["selector"]["matchLabels"]
        );
    }
}

/// Containers standing in for the StatefulSet's pods.
struct Rehearsal {
    docs: Vec<Value>,
    namespace: String,
    network: String,
    suffix: String,
    image: String,
    pods: BTreeMap<usize, String>,
}

impl Drop for Rehearsal {
    fn drop(&mut self) {
        for name in self.pods.values() {
            let _ = Command::new("docker").args(["rm", "-f", name]).output();
        }
        for volume in self.volumes() {
            let _ = Command::new("docker")
                .args(["volume", "rm", &volume])
                .output();
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &self.network])
            .output();
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Rehearsal {
    fn new(overlay: &str) -> Rehearsal {
        let docs = to_json(&render(overlay));
        let sts = find(&docs, "StatefulSet", "kademlia");
        let namespace = sts["metadata"]["namespace"].as_str().unwrap().to_string();
        let image = sts["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string();
        let suffix = format!("{:06x}", rand::random::<u32>() & 0xff_ffff);
        let network = format!("kad-rehearsal-{suffix}");
        docker(&["network", "create", &network]);
        // The Secret kademlia-ca, as deploy/README.md makes it: `kademlia cert ca`.
        docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &format!("kad-rehearsal-ca-{suffix}:/ca"),
            &image,
            "cert",
            "ca",
            "--dir",
            "/ca",
        ]);
        Rehearsal {
            docs,
            namespace,
            network,
            suffix,
            image,
            pods: BTreeMap::new(),
        }
    }

    /// `docker run` arguments for pod `i`, from the manifests: name and DNS aliases like the
    /// pod's, its environment, its security context, its args.
    fn run_args(&self, i: usize) -> Vec<String> {
        let sts = find(&self.docs, "StatefulSet", "kademlia");
        let pod = &sts["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let headless = sts["spec"]["serviceName"].as_str().unwrap();
        let pod_name = format!("kademlia-{i}");
        let mut a: Vec<String> = vec![
            "run".into(),
            "-d".into(),
            "--name".into(),
            format!("{pod_name}-{}", self.suffix),
        ];
        a.extend([
            "--hostname".into(),
            pod_name.clone(),
            "--network".into(),
            self.network.clone(),
        ]);
        a.extend([
            "--network-alias".into(),
            format!("{pod_name}.{headless}.{}.svc", self.namespace),
        ]);
        a.extend(["--network-alias".into(), headless.to_string()]);
        a.extend(["-p".into(), "127.0.0.1::50051".into()]);
        // Each volumeClaimTemplate is a named volume per ordinal: like a PersistentVolumeClaim
        // it outlives the pod and comes back with the pod of the same name. The Secret volume
        // is the rehearsal's CA volume, read-only.
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            let name = m["name"].as_str().unwrap();
            let path = m["mountPath"].as_str().unwrap();
            let secret = pod["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|v| v["name"] == name)
                .map(|v| v["secret"]["secretName"].as_str().unwrap().to_string());
            let mount = match secret {
                Some(s) => {
                    assert_eq!(s, "kademlia-ca", "the only Secret the pods mount");
                    format!("{}:{path}:ro", self.ca_volume())
                }
                None => format!("{}:{path}", self.volume(name, i)),
            };
            a.extend(["-v".into(), mount]);
        }
        let uid = pod["securityContext"]["runAsUser"].as_u64().unwrap();
        let gid = pod["securityContext"]["runAsGroup"].as_u64().unwrap();
        a.extend(["--user".into(), format!("{uid}:{gid}")]);
        if c["securityContext"]["readOnlyRootFilesystem"] == true {
            a.push("--read-only".into());
        }
        for cap in c["securityContext"]["capabilities"]["drop"]
            .as_array()
            .unwrap()
        {
            a.extend(["--cap-drop".into(), cap.as_str().unwrap().to_string()]);
        }
        if c["securityContext"]["allowPrivilegeEscalation"] == false {
            a.extend(["--security-opt".into(), "no-new-privileges".into()]);
        }
        for (k, v) in pod_env(&self.docs, &pod_name, &self.namespace) {
            a.extend(["-e".into(), format!("{k}={v}")]);
        }
        a.push(self.image.clone());
        a.extend(
            c["args"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string()),
        );
        a
    }

    /// The docker volume standing for claim `claim` of pod `i`.
    fn volume(&self, claim: &str, i: usize) -> String {
        format!("kad-rehearsal-{claim}-kademlia-{i}-{}", self.suffix)
    }

    /// The docker volume standing for the Secret kademlia-ca.
    fn ca_volume(&self) -> String {
        format!("kad-rehearsal-ca-{}", self.suffix)
    }

    /// Every docker volume this rehearsal may have created.
    fn volumes(&self) -> Vec<String> {
        let sts = find(&self.docs, "StatefulSet", "kademlia");
        let claims: Vec<String> = sts["spec"]["volumeClaimTemplates"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        claims
            .iter()
            .flat_map(|c| (0..8).map(move |i| (c.clone(), i)))
            .map(|(c, i)| self.volume(&c, i))
            .chain([self.ca_volume()])
            .collect()
    }

    fn start_all(&mut self, ordinals: impl IntoIterator<Item = usize>) {
        let runs: Vec<(usize, Vec<String>)> = ordinals
            .into_iter()
            .map(|i| (i, self.run_args(i)))
            .collect();
        // All at once, as podManagementPolicy: Parallel does.
        std::thread::scope(|s| {
            for (_, args) in &runs {
                s.spawn(move || docker(&args.iter().map(String::as_str).collect::<Vec<_>>()));
            }
        });
        for (i, _) in runs {
            self.pods.insert(i, format!("kademlia-{i}-{}", self.suffix));
        }
    }

    /// Deletes pod `i`: SIGKILL (a crash) or SIGTERM with the manifests' grace (scale-down).
    fn delete(&mut self, i: usize, crash: bool) {
        let name = self.pods.remove(&i).expect("pod exists");
        if crash {
            docker(&["kill", &name]);
        } else {
            let sts = find(&self.docs, "StatefulSet", "kademlia");
            let grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
                .as_u64()
                .unwrap()
                .to_string();
            docker(&["stop", "-t", &grace, &name]);
        }
        docker(&["rm", "-f", &name]);
    }

    fn addr(&self, i: usize) -> String {
        docker(&["port", &self.pods[&i], "50051"])
            .lines()
            .next()
            .unwrap()
            .to_string()
    }

    async fn ready(&self, i: usize) -> bool {
        let status = kademlia::cli::client::health_status(&self.addr(i), "").await;
        status.is_ok_and(|s| s == tonic_health::pb::health_check_response::ServingStatus::Serving)
    }

    async fn wait_ready(&self, ordinals: &[usize], within: Duration) -> Duration {
        let start = Instant::now();
        for &i in ordinals {
            while !self.ready(i).await {
                assert!(
                    start.elapsed() < within,
                    "kademlia-{i} not ready within {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        start.elapsed()
    }

    async fn client(
        &self,
        i: usize,
    ) -> kademlia::pb::dht_client::DhtClient<tonic::transport::Channel> {
        kademlia::cli::client::connect(&self.addr(i)).await.unwrap()
    }

    async fn peers(&self, i: usize) -> u32 {
        self.client(i)
            .await
            .info(kademlia::pb::InfoRequest {})
            .await
            .unwrap()
            .into_inner()
            .peers
    }

    async fn assert_all_readable(&self, keys: &[String], phase: &str) {
        for (n, k) in keys.iter().enumerate() {
            let ordinals: Vec<usize> = self.pods.keys().copied().collect();
            let i = ordinals[n % ordinals.len()];
            let got = self
                .client(i)
                .await
                .get(kademlia::pb::GetRequest { key: k.clone() })
                .await;
            let got = got
                .unwrap_or_else(|s| panic!("{phase}: {k} via kademlia-{i}: {s}"))
                .into_inner();
            assert_eq!(got.value, format!("value of {k}").into_bytes(), "{phase}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehearsal_of_the_statefulset_in_docker() {
    let mut r = Rehearsal::new("dev");
    let replicas = find(&r.docs, "StatefulSet", "kademlia")["spec"]["replicas"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(replicas, 3);
    let all: Vec<usize> = (0..replicas).collect();

    let t = Instant::now();
    r.start_all(all.clone());
    let ready = r.wait_ready(&all, Duration::from_secs(60)).await;
    eprintln!(
        "rehearsal: {replicas} pods started at once, all ready after {} ms",
        (t.elapsed().max(ready)).as_millis()
    );
    for &i in &all {
        assert_eq!(
            r.peers(i).await as usize,
            replicas - 1,
            "kademlia-{i} is not in one network with the others"
        );
    }

    let keys: Vec<String> = (0..30).map(|i| format!("rehearsal-{i}")).collect();
    for (n, k) in keys.iter().enumerate() {
        let req = kademlia::pb::PutRequest {
            key: k.clone(),
            value: format!("value of {k}").into_bytes(),
            ttl_seconds: None,
        };
        r.client(n % replicas)
            .await
            .put(req)
            .await
            .unwrap_or_else(|s| panic!("put {k}: {s}"));
    }
    r.assert_all_readable(&keys, "after put").await;

    // The pod that created the network crashes; the StatefulSet recreates it under the same
    // name and identity, and it rejoins through the headless service.
    r.delete(0, true);
    r.assert_all_readable(&keys, "pod-0 down").await;
    let t = Instant::now();
    r.start_all([0]);
    r.wait_ready(&[0], Duration::from_secs(60)).await;
    eprintln!(
        "rehearsal: kademlia-0 recreated and rejoined in {} ms",
        t.elapsed().as_millis()
    );
    assert_eq!(r.peers(0).await as usize, replicas - 1);
    r.assert_all_readable(&keys, "pod-0 rejoined").await;

    // Scale up to 5, down to 2 (graceful, highest ordinals first), up to 4 again.
    r.start_all([3, 4]);
    r.wait_ready(&[3, 4], Duration::from_secs(60)).await;
    r.assert_all_readable(&keys, "scaled to 5").await;
    for i in [4, 3, 2] {
        r.delete(i, false);
    }
    r.assert_all_readable(&keys, "scaled down to 2").await;
    let t = Instant::now();
    r.start_all([2, 3]);
    r.wait_ready(&[2, 3], Duration::from_secs(60)).await;
    eprintln!(
        "rehearsal: scaled back up to 4 in {} ms",
        t.elapsed().as_millis()
    );
    r.assert_all_readable(&keys, "scaled back up to 4").await;
    for i in [2, 3] {
        assert_eq!(r.peers(i).await, 3, "kademlia-{i} after scale-up");
    }

    // Every pod crashes at once (a power cut): recreated on their claims, they come back with
    // every key, which only their data dirs still hold.
    let up: Vec<usize> = r.pods.keys().copied().collect();
    for &i in &up {
        r.delete(i, true);
    }
    r.start_all(up.clone());
    r.wait_ready(&up, Duration::from_secs(60)).await;
    r.assert_all_readable(&keys, "every pod crashed and came back")
        .await;
}

//! The Kubernetes manifests and the container image, checked without a cluster or a Docker engine
//! (issue #6): every overlay of k8s/ rendered with `kubectl kustomize` and validated with
//! `kubernetes-validate --strict` against two Kubernetes versions; the rendered Jobs agree with
//! `promptad plan` on the same spec (completions, spec file, exit codes, image); the Dockerfile
//! agrees with the pins and paths the binary was built with.
//!
//! Needs `kubectl` (v1.32 with kustomize is on this machine kind) and `kubernetes-validate` in the
//! venv (scripts/bootstrap.sh installs it).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Kubernetes versions every overlay must validate against: the oldest we support
/// (`backoffLimitPerIndex` and `FailIndex` are beta and on by default since 1.29) and the one where
/// they went GA.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.33.0"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn overlays() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root().join("k8s/overlays"))
        .expect("k8s/overlays")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 4, "expected the overlays of every dataset and environment, found {dirs:?}");
    dirs
}

/// `kubectl`, or a failure that says what is missing.
fn kubectl() -> PathBuf {
    let found = Command::new("sh").args(["-c", "command -v kubectl"]).output().expect("sh");
    let path = String::from_utf8_lossy(&found.stdout).trim().to_string();
    assert!(
        found.status.success() && !path.is_empty(),
        "kubectl is not on PATH: these tests render the k8s/ overlays with `kubectl kustomize` (kubectl >= 1.27 has kustomize \
         built in; this machine kind ships v1.32). Install kubectl, then rerun."
    );
    PathBuf::from(path)
}

fn kubernetes_validate() -> PathBuf {
    let path = common::python().with_file_name("kubernetes-validate");
    assert!(
        path.is_file(),
        "{} not found: run scripts/bootstrap.sh (it installs kubernetes-validate==1.37.0 into the venv)",
        path.display()
    );
    path
}

fn render(overlay: &Path) -> String {
    let out = Command::new(kubectl()).arg("kustomize").arg(overlay).output().expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl kustomize {} failed:\n{}",
        overlay.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `kubernetes-validate --strict -k VERSION` on `yaml`; returns (success, output).
fn validate(yaml: &str, version: &str) -> (bool, String) {
    let mut file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    file.write_all(yaml.as_bytes()).unwrap();
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "-k", version])
        .arg(file.path())
        .output()
        .expect("run kubernetes-validate");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// The YAML documents as JSON values (PyYAML from the venv: the Rust side has no YAML parser).
fn documents(yaml: &str) -> Vec<Value> {
    let mut child = Command::new(common::python())
        .args(["-c", "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d], sys.stdout)"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "PyYAML could not read the rendered manifests");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(docs: &'a [Value], kind: &str, name_prefix: &str) -> &'a Value {
    let matching: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"].as_str().unwrap_or("").starts_with(name_prefix))
        .collect();
    assert_eq!(matching.len(), 1, "expected one {kind} named {name_prefix}*, found {}", matching.len());
    matching[0]
}

#[test]
fn every_overlay_renders_and_validates_strictly_for_two_kubernetes_versions() {
    for overlay in overlays() {
        let yaml = render(&overlay);
        for version in KUBERNETES_VERSIONS {
            let (ok, output) = validate(&yaml, version);
            assert!(ok, "{} does not validate against Kubernetes {version}:\n{output}", overlay.display());
            eprintln!("{}: valid for Kubernetes {version}", overlay.display());
        }
    }
}

#[test]
fn the_validator_rejects_an_unknown_field_and_a_wrong_type() {
    // Without this, a validator that accepts everything would pass the test above.
    let yaml = render(&overlays()[0]);
    // An extra key beside the first `restartPolicy`, at its indentation (inside a pod spec).
    let line = yaml.lines().find(|l| l.trim() == "restartPolicy: Never").expect("a pod spec");
    let indent = &line[..line.len() - line.trim_start().len()];
    let bogus = yaml.replacen(&format!("{line}\n"), &format!("{line}\n{indent}bogusField: true\n"), 1);
    assert_ne!(bogus, yaml);
    let (ok, output) = validate(&bogus, KUBERNETES_VERSIONS[1]);
    assert!(!ok && output.contains("bogusField"), "an unknown field was accepted:\n{output}");
    let wrong = yaml.replacen("backoffLimitPerIndex: 1", "backoffLimitPerIndex: one", 1);
    assert_ne!(wrong, yaml);
    let (ok, output) = validate(&wrong, KUBERNETES_VERSIONS[1]);
    assert!(!ok, "a string where an integer belongs was accepted:\n{output}");
}

/// The workloads of a rendered overlay: (kind, component, the Job spec, the pod spec).
fn workloads(docs: &[Value]) -> Vec<(&str, String, &Value, &Value)> {
    docs.iter()
        .filter_map(|d| {
            let component = d["metadata"]["labels"]["app.kubernetes.io/component"].as_str().unwrap_or("").to_string();
            match d["kind"].as_str()? {
                "Job" => Some(("Job", component, &d["spec"], &d["spec"]["template"]["spec"])),
                "CronJob" => Some((
                    "CronJob",
                    component,
                    &d["spec"]["jobTemplate"]["spec"],
                    &d["spec"]["jobTemplate"]["spec"]["template"]["spec"],
                )),
                _ => None,
            }
        })
        .collect()
}

fn ints(value: &Value) -> Vec<u8> {
    value.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect()
}

#[test]
fn rendered_jobs_agree_with_promptad_plan() {
    let version = env!("CARGO_PKG_VERSION");
    let dockerfile_uid = dockerfile_arg("UID").parse::<u64>().unwrap();
    for overlay in overlays() {
        let name = overlay.display().to_string();
        let docs = documents(&render(&overlay));

        // The spec: PROMPTAD_SPEC names a file of the specs ConfigMap, which is jobs/<file> verbatim.
        let env_map = find(&docs, "ConfigMap", "promptad-env");
        let spec_path = env_map["data"]["PROMPTAD_SPEC"].as_str().unwrap();
        let file = spec_path
            .strip_prefix("/etc/promptad/specs/")
            .unwrap_or_else(|| panic!("{name}: PROMPTAD_SPEC {spec_path} is not in the specs mount"));
        let specs = find(&docs, "ConfigMap", "promptad-specs");
        let local = root().join("jobs").join(file);
        let text =
            std::fs::read_to_string(&local).unwrap_or_else(|e| panic!("{name}: {spec_path} has no jobs/{file}: {e}"));
        assert_eq!(
            specs["data"][file].as_str(),
            Some(text.as_str()),
            "{name}: the ConfigMap's {file} differs from jobs/{file}"
        );

        let plan = common::promptad(&["plan", local.to_str().unwrap(), "--format", "json"]);
        assert!(plan.status.success(), "promptad plan jobs/{file}: {}", String::from_utf8_lossy(&plan.stderr));
        let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();
        let spec: toml::Value = toml::from_str(&text).unwrap();
        let gpu = spec["runtime"]["device"].as_str().unwrap_or("auto").starts_with("cuda");

        let work = workloads(&docs);
        let components: Vec<&str> = work.iter().map(|w| w.1.as_str()).collect();
        assert_eq!(
            components.len(),
            3,
            "{name}: expected the train Job, the score Job and the nightly CronJob, found {components:?}"
        );
        let mut images = BTreeMap::new();
        for (kind, component, job, pod) in &work {
            let what = format!("{name}: {kind} {component}");
            let (expected, command) = match component.as_str() {
                "train" => (&plan["train"]["completions"], "train"),
                "score" | "nightly" => (&plan["score"]["completions"], "score"),
                other => panic!("{what}: unexpected component {other}"),
            };
            assert_eq!(&job["completions"], expected, "{what}: completions differ from `promptad plan jobs/{file}`");
            assert!(
                job["parallelism"].as_u64().unwrap() <= expected.as_u64().unwrap(),
                "{what}: parallelism above completions"
            );
            assert_eq!(job["completionMode"], "Indexed", "{what}");
            assert!(job["backoffLimitPerIndex"].as_u64().unwrap() >= 1, "{what}: no retry budget per index");
            assert!(job["ttlSecondsAfterFinished"].as_u64().is_some(), "{what}: finished Jobs are never cleaned up");
            assert_eq!(pod["restartPolicy"], "Never", "{what}: podFailurePolicy needs restartPolicy Never");

            let containers = pod["containers"].as_array().unwrap();
            assert_eq!(containers.len(), 1, "{what}");
            let container = &containers[0];
            let args: Vec<&str> = container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
            assert_eq!(args[0], command, "{what}: runs `promptad {}`", args.join(" "));
            if component == "nightly" {
                let id = args
                    .iter()
                    .position(|a| *a == "--run")
                    .map(|i| args[i + 1])
                    .unwrap_or_else(|| panic!("{what}: no --run"));
                assert!(
                    id.contains("{schedule_date}"),
                    "{what}: the nightly run id {id} does not change with the night"
                );
                promptad::spec::plan::check_run_id_template(id).unwrap();
            }
            images.insert(component.clone(), container["image"].as_str().unwrap().to_string());

            // The exit codes the worker documents are the ones the policy acts on.
            let rules = job["podFailurePolicy"]["rules"].as_array().unwrap();
            let codes = |action: &str| -> Vec<u8> {
                rules
                    .iter()
                    .filter(|r| r["action"] == action && r["onExitCodes"].is_object())
                    .flat_map(|r| ints(&r["onExitCodes"]["values"]))
                    .collect()
            };
            assert_eq!(
                codes("FailIndex"),
                promptad::exit::codes(promptad::exit::Retry::Never),
                "{what}: FailIndex exit codes"
            );
            assert_eq!(
                codes("Ignore"),
                promptad::exit::codes(promptad::exit::Retry::NotCounted),
                "{what}: Ignore exit codes"
            );
            for rule in rules.iter().filter(|r| r["onExitCodes"].is_object()) {
                assert_eq!(
                    rule["onExitCodes"]["containerName"], container["name"],
                    "{what}: a rule names another container"
                );
            }
            assert!(
                rules.iter().any(|r| r["onPodConditions"][0]["type"] == "DisruptionTarget" && r["action"] == "Ignore"),
                "{what}: preemption counts as a failure"
            );

            // The spec file is mounted from the generated ConfigMap, the environment from promptad-env.
            let volume =
                pod["volumes"].as_array().unwrap().iter().find(|v| v["configMap"]["name"] == specs["metadata"]["name"]);
            let volume = volume.unwrap_or_else(|| panic!("{what}: does not mount {}", specs["metadata"]["name"]));
            let mount =
                container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == volume["name"]).unwrap();
            assert_eq!(mount["mountPath"], "/etc/promptad/specs", "{what}");
            assert!(
                container["envFrom"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["configMapRef"]["name"] == env_map["metadata"]["name"]),
                "{what}: no promptad-env"
            );
            let job_name =
                container["env"].as_array().unwrap().iter().find(|e| e["name"] == promptad::spec::plan::JOB_NAME_ENV);
            assert_eq!(
                job_name.map(|e| &e["valueFrom"]["fieldRef"]["fieldPath"]),
                Some(&Value::from("metadata.labels['batch.kubernetes.io/job-name']")),
                "{what}: the run id placeholders need the Job's name"
            );

            // GPU where the spec asks for CUDA, none where it does not.
            let gpus = &container["resources"]["limits"]["nvidia.com/gpu"];
            if gpu {
                assert_eq!(gpus, 1, "{what}: the spec runs on cuda but the pod has no GPU");
                assert!(
                    pod["tolerations"].as_array().is_some_and(|t| t.iter().any(|t| t["key"] == "nvidia.com/gpu")),
                    "{what}: no GPU toleration"
                );
                assert!(pod["nodeSelector"].is_object(), "{what}: no GPU node selector");
            } else {
                assert!(gpus.is_null(), "{what}: a GPU for a CPU spec");
            }
            for key in ["cpu", "memory", "ephemeral-storage"] {
                assert!(container["resources"]["requests"][key].is_string(), "{what}: no {key} request");
            }

            // Non-root, as the image's user.
            assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{what}");
            assert_eq!(
                pod["securityContext"]["runAsUser"], dockerfile_uid,
                "{what}: runAsUser is not the Dockerfile's UID"
            );
            assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false, "{what}");
        }
        let distinct: std::collections::BTreeSet<&String> = images.values().collect();
        assert_eq!(distinct.len(), 1, "{name}: the workloads run different images: {images:?}");
        let image = distinct.into_iter().next().unwrap();
        assert!(
            image.ends_with(&format!(":{version}")),
            "{name}: image {image} is not tagged with the crate version {version}"
        );
    }
}

#[test]
fn every_object_carries_the_labels_the_apply_steps_select() {
    // README: `kubectl apply -k OVERLAY -l 'app.kubernetes.io/component in (config,train)'`, then
    // `... in (config,score,nightly)`: every object must be in exactly one of those groups.
    for overlay in overlays() {
        let instance = overlay.file_name().unwrap().to_str().unwrap().to_string();
        for doc in documents(&render(&overlay)) {
            let what = format!("{instance}: {} {}", doc["kind"], doc["metadata"]["name"]);
            let labels = &doc["metadata"]["labels"];
            assert_eq!(labels["app.kubernetes.io/name"], "promptad", "{what}");
            assert_eq!(labels["app.kubernetes.io/instance"], instance.as_str(), "{what}");
            assert_eq!(labels["app.kubernetes.io/version"], env!("CARGO_PKG_VERSION"), "{what}");
            let component =
                labels["app.kubernetes.io/component"].as_str().unwrap_or_else(|| panic!("{what}: no component label"));
            assert!(["config", "train", "score", "nightly"].contains(&component), "{what}: component {component}");
        }
    }
}

#[test]
fn s3_credentials_come_from_web_identity_or_a_secret_never_from_the_manifests() {
    for overlay in overlays() {
        let name = overlay.display().to_string();
        let docs = documents(&render(&overlay));
        let account = find(&docs, "ServiceAccount", "promptad");
        let web_identity = account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]
            .as_str()
            .is_some_and(|a| a.starts_with("arn:aws:iam::"));
        for (_, component, _, pod) in workloads(&docs) {
            assert_eq!(
                pod["serviceAccountName"], account["metadata"]["name"],
                "{name}: {component} runs as another service account"
            );
            let from_secret = pod["containers"][0]["envFrom"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["secretRef"]["name"] == "promptad-s3");
            assert!(web_identity != from_secret, "{name}: {component} must get S3 access from exactly one of web identity ({web_identity}) and the Secret ({from_secret})");
        }
        for doc in docs.iter().filter(|d| d["kind"] == "ConfigMap" || d["kind"] == "Secret") {
            let data = doc["data"].as_object().map(|m| m.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
            assert!(
                !data.iter().any(|k| k.contains("SECRET") || k.contains("ACCESS_KEY")),
                "{name}: {} holds credentials",
                doc["metadata"]["name"]
            );
        }
    }
}

#[test]
fn the_specs_configmap_holds_every_spec_in_jobs() {
    let listed = std::fs::read_to_string(root().join("jobs/kustomization.yaml")).unwrap();
    let mut specs: Vec<String> = std::fs::read_dir(root().join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    specs.sort();
    assert!(specs.len() >= 3, "{specs:?}");
    for spec in specs {
        assert!(
            listed.contains(&format!("- {spec}")),
            "jobs/{spec} is not in jobs/kustomization.yaml, so no overlay can use it"
        );
    }
}

// ---- The Dockerfile, without a Docker engine ----

fn dockerfile() -> String {
    std::fs::read_to_string(root().join("Dockerfile")).unwrap()
}

/// The default of a global `ARG NAME=value`.
fn dockerfile_arg(name: &str) -> String {
    dockerfile()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
        .unwrap_or_else(|| panic!("the Dockerfile has no `ARG {name}=...`"))
        .trim()
        .to_string()
}

/// The Dockerfile's stages: (FROM line, body).
fn stages() -> Vec<(String, String)> {
    let text = dockerfile();
    let mut stages: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if line.starts_with("FROM ") {
            stages.push((line.to_string(), String::new()));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    stages
}

#[test]
fn image_pins_the_torch_the_binary_was_built_for() {
    let torch = dockerfile_arg("TORCH_VERSION");
    assert_eq!(torch, promptad::runtime::REQUIRED_TORCH, "Dockerfile TORCH_VERSION vs src/runtime.rs REQUIRED_TORCH");
    let bootstrap = std::fs::read_to_string(root().join("scripts/bootstrap.sh")).unwrap();
    assert!(
        bootstrap.contains(&format!("TORCH=\"torch=={torch}\"")),
        "scripts/bootstrap.sh does not pin torch=={torch}"
    );
    let cargo = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    assert!(
        cargo.contains("tch = \"=0.24.0\"") && cargo.contains("torch-sys = \"=0.24.0\""),
        "tch 0.24.0 binds libtorch 2.11.0 (DESIGN §2)"
    );
    let report = common::promptad(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&report.stdout).unwrap();
    assert!(
        report["torch"]["built_against"].as_str().unwrap().starts_with(&torch),
        "this binary was built against {}",
        report["torch"]["built_against"]
    );
    // Both stages install exactly that torch into the venv.
    for (from, body) in stages() {
        assert!(
            body.contains("pip install")
                && body.contains("torch==${TORCH_VERSION}")
                && body.contains("ARG TORCH_VERSION"),
            "{from}: does not install torch==${{TORCH_VERSION}}"
        );
    }
}

#[test]
fn image_puts_libtorch_where_the_binarys_runpath_points() {
    let (python, venv) = (dockerfile_arg("PYTHON"), dockerfile_arg("VENV"));
    let stages = stages();
    assert_eq!(stages.len(), 2, "expected a build and a runtime stage");
    for (from, body) in &stages {
        // The same Python makes the same site-packages path; both stages use the global ARGs.
        assert!(
            body.contains("ARG PYTHON\n") && body.contains("ARG VENV\n") && body.contains("${PYTHON} -m venv ${VENV}"),
            "{from}: venv not made with ${{PYTHON}} at ${{VENV}}"
        );
        assert!(
            body.contains(&format!("install -y --no-install-recommends {python} {python}-venv")),
            "{from}: does not install {python}"
        );
        assert!(
            from.contains("bookworm"),
            "{from}: both stages must be Debian bookworm (glibc and {python} of the build)"
        );
    }
    // build.rs's RUNPATH is <venv>/lib/<python>/site-packages/torch/lib: the build stage checks the
    // binary has it, and this machine's binary has the same shape with the same Python.
    assert!(
        stages[0].1.contains("grep -F \"${VENV}/lib/${PYTHON}/site-packages/torch/lib\""),
        "the build stage does not check the RUNPATH"
    );
    let elf =
        Command::new("readelf").arg("-d").arg(env!("CARGO_BIN_EXE_promptad")).output().expect("readelf (binutils)");
    let dynamic = String::from_utf8_lossy(&elf.stdout);
    let runpath = dynamic.lines().find(|l| l.contains("RUNPATH")).expect("the binary has a RUNPATH (build.rs)");
    assert!(
        runpath.contains(&format!("/lib/{python}/site-packages/torch/lib")),
        "this binary's {runpath} is not for {python}; the image would not find libtorch"
    );
    // The runtime copies the binary the build stage made, and runs it.
    let runtime = &stages[1].1;
    assert!(
        stages[0].1.contains("CARGO_TARGET_DIR=/build/target")
            && runtime.contains("COPY --from=build /build/target/release/promptad /usr/local/bin/promptad")
    );
    assert!(runtime.contains("RUN promptad doctor"), "the image is not checked with promptad doctor");
    assert!(
        runtime.contains("ENTRYPOINT [\"/usr/local/bin/promptad\"]"),
        "the manifests pass subcommands as args to the entrypoint"
    );
    assert!(stages[0].1.contains("cargo build --release --locked"), "the image must build the locked dependency set");
    assert!(venv.starts_with('/'));
}

#[test]
fn image_installs_every_system_library_the_binary_loads() {
    // Every library the binary loads (transitively) comes from the torch wheels in the venv or
    // from a Debian package; the runtime stage must install each such package (glibc is in every
    // image). This machine is Debian bookworm, as the image is.
    let ldd = Command::new("ldd").arg(env!("CARGO_BIN_EXE_promptad")).output().expect("ldd");
    let listing = String::from_utf8_lossy(&ldd.stdout);
    let runtime = &stages()[1].1;
    let mut packages = std::collections::BTreeSet::new();
    for line in listing.lines() {
        let Some(path) = line.split("=>").nth(1).and_then(|r| r.split_whitespace().next()) else { continue };
        assert_ne!(path, "not", "a library is not found: {line}");
        if path.contains("/site-packages/") {
            continue; // torch and its nvidia-* wheels, installed by pip
        }
        // dpkg knows a file by the path its package installed it at: /lib/... or /usr/lib/...
        let canonical = std::fs::canonicalize(path).map(|p| p.display().to_string()).unwrap_or_default();
        let package = [path, canonical.as_str()]
            .iter()
            .filter_map(|p| {
                let owner = Command::new("dpkg").args(["-S", p]).output().expect("dpkg");
                owner
                    .status
                    .success()
                    .then(|| String::from_utf8_lossy(&owner.stdout).split(':').next().unwrap_or("").trim().to_string())
            })
            .next()
            .unwrap_or_default();
        assert!(!package.is_empty(), "no Debian package owns {path}");
        packages.insert(package);
    }
    assert!(packages.contains("libstdc++6"), "expected libstdc++6 among {packages:?}");
    for package in &packages {
        assert!(
            package == "libc6" || runtime.contains(&format!(" {package}")),
            "the runtime stage does not install {package} (needed by the binary)"
        );
    }
    eprintln!("system packages the binary needs: {packages:?}");
}

#[test]
fn image_runs_as_the_user_the_manifests_expect() {
    let uid = dockerfile_arg("UID");
    let runtime = &stages()[1].1;
    assert!(
        runtime.contains("USER ${UID}:${UID}") && runtime.contains("useradd --uid ${UID}"),
        "the runtime stage must run as the numeric ${{UID}}"
    );
    assert_ne!(uid, "0");
    let base = std::fs::read_to_string(root().join("k8s/base/train-job.yaml")).unwrap();
    assert!(base.contains(&format!("runAsUser: {uid}")), "k8s/base runs as another user than the image's {uid}");
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target"), ".dockerignore must keep build outputs out of the context");
}

//! The stand-in Kubernetes API server (tests/kmock) inside a sandbox's node
//! namespace, on that namespace's loopback, with kubectl pointed at it: the
//! agent's Kubernetes source gets a real watch stream and the test edits the
//! cluster with a real client.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _};

use crate::{
    http,
    sandbox::{wait_for, Sandbox},
};

pub struct ApiServer {
    pub port: u16,
    pub kubeconfig: PathBuf,
    node_ns: String,
    work: PathBuf,
    child: Child,
}

fn kmock_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("kmock")
}

impl ApiServer {
    /// Starts serve.py in `sb`'s node namespace and waits until it answers.
    pub fn start(sb: &Sandbox) -> anyhow::Result<Self> {
        let work = sb.work.join("apiserver");
        std::fs::create_dir_all(&work)?;
        let ready = work.join("port");
        let log = std::fs::File::create(work.join("apiserver.log"))?;
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", sb.node_ns))
            .arg("python3")
            .arg(kmock_dir().join("serve.py"))
            .args(["--port", "0", "--ready-file"])
            .arg(&ready)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting tests/kmock/serve.py (is kmock installed? cargo xtask setup)")?;
        let mut me = ApiServer {
            port: 0,
            kubeconfig: work.join("kubeconfig"),
            node_ns: sb.node_ns.clone(),
            work,
            child,
        };
        let Some(port) = wait_for(Duration::from_secs(20), || {
            std::fs::read_to_string(&ready).ok()?.trim().parse().ok()
        }) else {
            bail!("the API server did not start; log:\n{}", me.log());
        };
        me.port = port;
        std::fs::write(
            &me.kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: kmock\n  cluster:\n    server: http://127.0.0.1:{port}\nusers:\n- name: kmock\n  user:\n    token: any\ncontexts:\n- name: kmock\n  context:\n    cluster: kmock\n    user: kmock\n    namespace: default\ncurrent-context: kmock\n"
            ),
        )?;
        Ok(me)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.work.join("apiserver.log")).unwrap_or_default()
    }

    /// Runs kubectl against this server (in the node namespace); its stdout.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node_ns))
            .arg("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `kubectl apply` of `yaml` (no OpenAPI document to validate against).
    pub fn apply(&self, yaml: &str) -> anyhow::Result<String> {
        let f = self.work.join("apply.yaml");
        std::fs::write(&f, yaml)?;
        self.kubectl(&[
            "apply",
            "--validate=false",
            "-f",
            f.to_str().context("path")?,
        ])
    }

    /// POSTs to one of the server's test controls (`/lash-test/compact`,
    /// `/lash-test/outage?seconds=N`).
    pub fn control(&self, path: &str) -> anyhow::Result<String> {
        let (code, body) = http::request_in(
            &self.node_ns,
            &format!("127.0.0.1:{}", self.port),
            "POST",
            path,
        )?;
        if code != 200 {
            bail!("{path}: HTTP {code}: {body}");
        }
        Ok(body)
    }

    /// A kept-alive connection to the server from its namespace, for plain
    /// HTTP requests (a timed write pays no client start).
    pub fn connect(&self) -> anyhow::Result<http::Conn> {
        http::Conn::open_in(&self.node_ns, &format!("127.0.0.1:{}", self.port))
    }

    /// Creates `objects` (typed Services, EndpointSlices, ...) in one
    /// request through `/lash-test/load`; the server's answer.
    pub fn load(&self, objects: &[serde_json::Value]) -> anyhow::Result<serde_json::Value> {
        let body = serde_json::to_vec(objects)?;
        let (code, answer) =
            self.connect()?
                .request("POST", "/lash-test/load", "application/json", &body)?;
        if code != 200 {
            bail!(
                "/lash-test/load: HTTP {code}: {}",
                String::from_utf8_lossy(&answer)
            );
        }
        Ok(serde_json::from_slice(&answer)?)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

//! Running the built `lash-cni` the way a container runtime does: exactly the
//! given `CNI_*` environment, the configuration on stdin, and the outcome
//! read back as the spec shapes it.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use serde_json::Value;

use crate::sandbox::bin;

/// One plugin run.
pub struct CniRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs the plugin with exactly `vars` as its environment and `stdin`.
pub fn run(vars: &[(&str, &str)], stdin: &str) -> CniRun {
    let path = bin("lash-cni");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first",
        path.display()
    );
    let mut child = Command::new(&path)
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn lash-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    CniRun {
        success: out.status.success(),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

impl CniRun {
    /// The error object of a failed run, after checking the spec's shape: a
    /// non-zero exit, one JSON object on stdout with `cniVersion`, `code`,
    /// `msg` and `details`, and a log line on stderr.
    pub fn error(&self) -> Value {
        assert!(
            !self.success,
            "expected failure, got success: {}",
            self.stdout
        );
        let err: Value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {:?}", self.stdout));
        for key in ["cniVersion", "msg", "details"] {
            assert!(err[key].is_string(), "{key} missing or not a string: {err}");
        }
        assert!(err["code"].is_u64(), "code missing: {err}");
        assert!(
            self.stderr.contains("lash-cni: error"),
            "stderr has no log line: {:?}",
            self.stderr
        );
        err
    }

    pub fn code(&self) -> u64 {
        self.error()["code"].as_u64().unwrap()
    }

    pub fn msg(&self) -> String {
        self.error()["msg"].as_str().unwrap().to_string()
    }

    /// Success as the spec wants it for DEL, GC and STATUS: exit 0, nothing
    /// on stdout.
    pub fn assert_quiet_success(&self, what: &str) {
        assert!(
            self.success && self.stdout.trim().is_empty(),
            "{what}: expected a silent success, got stdout {:?} stderr {:?}",
            self.stdout,
            self.stderr
        );
    }
}

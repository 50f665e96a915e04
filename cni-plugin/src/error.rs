//! Every way a CNI invocation fails, with the spec's code for each, and the
//! error object the runtime reads from stdout:
//! `{"cniVersion", "code", "msg", "details"}`.
//!
//! `msg` says what was wrong and where (which variable, which field) in one
//! line; `details` adds what we know beyond that (every problem, the cause).

use std::{fmt, io};

use serde_json::{json, Value};

use crate::{agent::AgentProblem, env::Command, version::CniVersion};

/// One bad environment variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvProblem {
    pub var: &'static str,
    pub problem: String,
}

impl EnvProblem {
    pub fn missing(var: &'static str, why: &str) -> EnvProblem {
        EnvProblem {
            var,
            problem: format!("is not set ({why})"),
        }
    }

    pub fn invalid(var: &'static str, value: &str, why: &str) -> EnvProblem {
        EnvProblem {
            var,
            problem: format!("{value:?}: {why}"),
        }
    }
}

impl fmt::Display for EnvProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.var, self.problem)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    /// 1: the config's `cniVersion` is one we do not speak.
    #[error("cniVersion {requested:?} is not supported")]
    UnsupportedVersion { requested: String },

    /// 1: the verb is newer than the config's `cniVersion`.
    #[error("{verb} needs cniVersion {needs} or later, the configuration says {has}")]
    VerbNeedsNewerVersion {
        verb: Command,
        needs: CniVersion,
        has: CniVersion,
    },

    /// 4: missing or invalid `CNI_*` variables, all of them.
    #[error("invalid environment: {}", names(.0))]
    Env(Vec<EnvProblem>),

    /// 5: stdin could not be read.
    #[error("cannot read the network configuration from stdin")]
    Stdin(#[source] io::Error),

    /// 6: stdin is not JSON.
    #[error("the network configuration is not valid JSON")]
    NotJson(#[source] serde_json::Error),

    /// 6: stdin is JSON, but not an object.
    #[error("the network configuration must be a JSON object, found {found}")]
    NotAnObject { found: &'static str },

    /// 7: a field is missing, of the wrong type, or holds a bad value.
    #[error("invalid network configuration: {field} {problem}")]
    InvalidConfig { field: String, problem: String },

    /// The agent could not serve a verb: 11 when it is unreachable or not
    /// answering (the runtime should try again), else what the agent's
    /// refusal means (see `AgentProblem::code`).
    #[error("{what}: {problem}")]
    Agent {
        /// The verb, and the attachment if it is about one ("ADD of abc/eth0").
        what: String,
        #[source]
        problem: AgentProblem,
    },

    /// 50: STATUS, when ADD could not be served.
    #[error("not ready for ADD: {0}")]
    NotReady(#[source] AgentProblem),

    /// 11: a verb this build does not carry out yet (ADD and CHECK wait for
    /// the pod's interface to be made here). "Try again later" is what a
    /// runtime should do: a newer plugin on the node will serve it.
    #[error("{what}: this lash-cni does not serve {verb} yet (the agent at {} answers)", socket.display())]
    NotServedYet {
        what: String,
        verb: Command,
        socket: std::path::PathBuf,
    },
}

fn names(problems: &[EnvProblem]) -> String {
    let names: Vec<&str> = problems.iter().map(|p| p.var).collect();
    names.join(", ")
}

impl CniError {
    /// The spec's well-known error code.
    pub fn code(&self) -> u32 {
        match self {
            CniError::UnsupportedVersion { .. } | CniError::VerbNeedsNewerVersion { .. } => 1,
            CniError::Env(_) => 4,
            CniError::Stdin(_) => 5,
            CniError::NotJson(_) | CniError::NotAnObject { .. } => 6,
            CniError::InvalidConfig { .. } => 7,
            CniError::Agent { problem, .. } => problem.code(),
            CniError::NotServedYet { .. } => 11,
            CniError::NotReady(_) => 50,
        }
    }

    pub fn msg(&self) -> String {
        self.to_string()
    }

    /// Everything behind `msg`: each environment problem, the versions we
    /// speak, the chain of causes.
    pub fn details(&self) -> String {
        match self {
            CniError::Env(problems) => problems
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            CniError::UnsupportedVersion { .. } => {
                format!("lash-cni speaks {}", CniVersion::supported_list())
            }
            other => {
                let mut parts = Vec::new();
                let mut source = std::error::Error::source(other);
                while let Some(s) = source {
                    parts.push(s.to_string());
                    source = s.source();
                }
                if parts.is_empty() {
                    self.to_string()
                } else {
                    parts.join(": ")
                }
            }
        }
    }

    /// The error object, in `cni_version` (the config's version when we got
    /// that far, else the latest).
    pub fn to_json(&self, cni_version: &str) -> Value {
        json!({
            "cniVersion": cni_version,
            "code": self.code(),
            "msg": self.msg(),
            "details": self.details(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    #[test]
    fn codes_follow_the_spec() {
        let agent = || AgentProblem::Silent {
            socket: PathBuf::from("/run/lash/cni.sock"),
            after: std::time::Duration::from_secs(10),
        };
        let cases = [
            (
                CniError::UnsupportedVersion {
                    requested: "0.2.0".into(),
                },
                1,
            ),
            (
                CniError::VerbNeedsNewerVersion {
                    verb: Command::Gc,
                    needs: CniVersion::V1_1_0,
                    has: CniVersion::V1_0_0,
                },
                1,
            ),
            (CniError::Env(vec![]), 4),
            (
                CniError::Stdin(io::Error::from(io::ErrorKind::BrokenPipe)),
                5,
            ),
            (
                CniError::NotJson(serde_json::from_str::<Value>("{").unwrap_err()),
                6,
            ),
            (CniError::NotAnObject { found: "an array" }, 6),
            (
                CniError::InvalidConfig {
                    field: "name".into(),
                    problem: "is missing".into(),
                },
                7,
            ),
            (
                CniError::Agent {
                    what: "ADD of abc/eth0".into(),
                    problem: agent(),
                },
                11,
            ),
            (
                CniError::Agent {
                    what: "ADD of abc/eth0".into(),
                    problem: AgentProblem::RangeFull {
                        cidr: "10.244.1.0/24".into(),
                        used: 253,
                        total: 253,
                    },
                },
                crate::agent::codes::RANGE_EXHAUSTED,
            ),
            (CniError::NotReady(agent()), 50),
        ];
        for (err, code) in cases {
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn env_error_names_every_variable_in_msg() {
        let err = CniError::Env(vec![
            EnvProblem::missing("CNI_NETNS", "ADD needs it"),
            EnvProblem::invalid("CNI_IFNAME", "a/b", "must not contain '/'"),
        ]);
        assert_eq!(err.msg(), "invalid environment: CNI_NETNS, CNI_IFNAME");
        assert_eq!(
            err.details(),
            "CNI_NETNS is not set (ADD needs it); CNI_IFNAME \"a/b\": must not contain '/'"
        );
    }

    #[test]
    fn json_shape() {
        let err = CniError::InvalidConfig {
            field: "name".into(),
            problem: "is missing".into(),
        };
        let v = err.to_json("1.0.0");
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 7);
        assert_eq!(v["msg"], "invalid network configuration: name is missing");
        assert!(v["details"].is_string());
    }

    #[test]
    fn details_carry_the_cause() {
        let err = CniError::Agent {
            what: "DEL of abc/eth0".into(),
            problem: AgentProblem::Refused {
                socket: PathBuf::from("/tmp/x.sock"),
                status: tonic::Status::internal("writing ipam.json: disk full"),
            },
        };
        assert_eq!(err.code(), 5);
        assert!(err.msg().contains("/tmp/x.sock"), "{}", err.msg());
        assert!(err.details().contains("disk full"), "{}", err.details());
    }
}

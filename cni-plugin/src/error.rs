//! Every way a CNI invocation fails, with the spec's code for each, and the
//! error object the runtime reads from stdout:
//! `{"cniVersion", "code", "msg", "details"}`.
//!
//! `msg` says what was wrong and where (which variable, which field) in one
//! line; `details` adds what we know beyond that (every problem, the cause).

use std::{fmt, io};

use serde_json::{json, Value};

use crate::{
    agent::AgentProblem, env::Command, netns::NetnsError, rtnl::NetError, version::CniVersion,
};

/// Plugin-specific CNI codes (the spec leaves 100 and up to plugins).
pub mod codes {
    /// The node's pod CIDR has no free address. No well-known code fits: 11
    /// ("try again later") would have the runtime retry at once what only a
    /// deleted pod or a larger range fixes, and 5 (I/O) or 7 (config) would
    /// point at the wrong thing.
    pub const RANGE_EXHAUSTED: u32 = 100;
    /// The agent runs without `--pod-cidr`, so it has no addresses to give:
    /// a node misconfiguration, not a transient state.
    pub const NO_POD_CIDR: u32 = 101;
    /// CNI_NETNS is well formed (else 4) but names no network namespace we
    /// can enter: it does not exist (the sandbox is gone, or the runtime
    /// passed a wrong path) or is another kind of file. Not 5: nothing
    /// failed to read or write, the runtime's namespace is not there.
    pub const NETNS_UNUSABLE: u32 = 102;
    /// CHECK found the attachment other than ADD left it: an interface,
    /// address, route, endpoint or program is missing or different.
    pub const CHECK_MISMATCH: u32 = 103;

    // The spec reserves codes below 100 for itself.
    const _: () = assert!(
        RANGE_EXHAUSTED >= 100
            && NO_POD_CIDR >= 100
            && NETNS_UNUSABLE >= 100
            && CHECK_MISMATCH >= 100
    );
}

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

    /// 102: CNI_NETNS cannot be opened or entered.
    #[error("{what}: {source}")]
    Netns {
        what: String,
        #[source]
        source: NetnsError,
    },

    /// 5: the kernel refused a change to links, addresses or routes, or a
    /// sysctl could not be written (the message says which and why).
    #[error("{what}: {source}")]
    Net {
        what: String,
        #[source]
        source: NetError,
    },

    /// 103: CHECK found the attachment other than ADD made it; every
    /// difference is named.
    #[error("{what}: {}", .missing.join("; "))]
    CheckMismatch { what: String, missing: Vec<String> },

    /// A failed ADD whose rollback left something behind: the code and
    /// message are the failure's, the details add what could not be undone.
    #[error("{cause}")]
    RollbackIncomplete {
        cause: Box<CniError>,
        leftovers: Vec<String>,
    },

    /// Several independent failures (GC goes on past each): the first one's
    /// code, every message.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<CniError>),
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
            CniError::Netns { .. } => codes::NETNS_UNUSABLE,
            CniError::Net { .. } => 5,
            CniError::CheckMismatch { .. } => codes::CHECK_MISMATCH,
            CniError::RollbackIncomplete { cause, .. } => cause.code(),
            CniError::Several(all) => all.first().map_or(5, CniError::code),
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
            CniError::RollbackIncomplete { cause, leftovers } => format!(
                "{}; rolling back left behind: {}",
                cause.details(),
                leftovers.join("; ")
            ),
            CniError::Several(all) => all
                .iter()
                .map(CniError::details)
                .collect::<Vec<_>>()
                .join("; "),
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
                codes::RANGE_EXHAUSTED,
            ),
            (CniError::NotReady(agent()), 50),
            (
                CniError::Netns {
                    what: "ADD of abc/eth0".into(),
                    source: NetnsError {
                        path: "/run/netns/gone".into(),
                        doing: "cannot open it",
                        cause: io::Error::from(io::ErrorKind::NotFound),
                    },
                },
                codes::NETNS_UNUSABLE,
            ),
            (
                CniError::Net {
                    what: "ADD of abc/eth0".into(),
                    source: NetError::io(
                        "writing rp_filter",
                        io::ErrorKind::PermissionDenied.into(),
                    ),
                },
                5,
            ),
            (
                CniError::CheckMismatch {
                    what: "CHECK of abc/eth0".into(),
                    missing: vec!["no route".into()],
                },
                codes::CHECK_MISMATCH,
            ),
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
    fn a_rollback_that_left_something_keeps_the_cause() {
        let err = CniError::RollbackIncomplete {
            cause: Box::new(CniError::Agent {
                what: "ADD of abc/eth0".into(),
                problem: AgentProblem::NoPodCidr {
                    socket: PathBuf::from("/run/lash/cni.sock"),
                },
            }),
            leftovers: vec!["releasing the address: agent gone".into()],
        };
        assert_eq!(err.code(), codes::NO_POD_CIDR);
        assert!(err.msg().contains("--pod-cidr"), "{}", err.msg());
        assert!(err.details().contains("agent gone"), "{}", err.details());
    }

    #[test]
    fn several_failures_take_the_first_code_and_name_all() {
        let err = CniError::Several(vec![
            CniError::CheckMismatch {
                what: "GC".into(),
                missing: vec!["first".into()],
            },
            CniError::Net {
                what: "GC".into(),
                source: NetError::io("deleting lxc0", io::ErrorKind::Other.into()),
            },
        ]);
        assert_eq!(err.code(), codes::CHECK_MISMATCH);
        assert!(
            err.msg().contains("first") && err.msg().contains("deleting lxc0"),
            "{}",
            err.msg()
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

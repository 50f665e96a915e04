//! One invocation, from environment and stdin to the reply: which verb, are
//! its variables and configuration valid, then what the verb does.
//!
//! Every verb but VERSION needs the agent: STATUS asks whether it can give
//! an address now, DEL releases the attachment's address, GC releases every
//! address whose attachment the runtime no longer lists. ADD and CHECK wait
//! for the pod's interface to be made here; until then they reach the agent
//! (so an unreachable one is named) and answer "not served yet" (11).
//!
//! An agent that cannot be reached, or does not answer, is the spec's "try
//! again later" (11) naming the socket, or 50 for STATUS. That holds for DEL
//! too: the spec wants DEL to succeed when what it would remove is already
//! gone, but without the agent we cannot know that, and a runtime retries a
//! DEL that failed with 11.

use serde_json::Value;

use crate::{
    agent::Agent,
    config::{self, NetConf},
    env::{self, Command, Env},
    error::CniError,
    version::{self, CniVersion},
};

pub struct Reply {
    /// The version to write an error in: the config's own when it names one
    /// we speak, else the latest.
    pub cni_version: CniVersion,
    /// What to print on success (None: print nothing, as CHECK, DEL, GC and
    /// STATUS do).
    pub outcome: Result<Option<Value>, CniError>,
}

pub fn run(lookup: &impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Reply {
    Reply {
        cni_version: config::peek_version(stdin).unwrap_or(CniVersion::LATEST),
        outcome: dispatch(lookup, stdin),
    }
}

fn dispatch(
    lookup: &impl Fn(&str) -> Option<String>,
    stdin: &[u8],
) -> Result<Option<Value>, CniError> {
    let command = env::command(lookup)?;
    if command == Command::Version {
        return version::version_reply(stdin).map(Some);
    }
    let env = env::read(command, lookup)?;
    let conf = config::parse(stdin, command)?;
    check_verb_allowed(command, &conf)?;
    let agent = Agent::new(&conf.agent_socket);
    // Runtime logs hold many failures at once: say which attachment this is.
    let what = match (&env.container_id, &env.ifname) {
        (Some(id), Some(ifname)) => format!("{command} of {id}/{ifname}"),
        _ => command.to_string(),
    };
    let failed = |problem| CniError::Agent {
        what: what.clone(),
        problem,
    };
    match command {
        Command::Status => {
            agent.ready_for_add().map_err(CniError::NotReady)?;
            Ok(None)
        }
        Command::Del => {
            agent.release(attachment_of(&env)).map_err(failed)?;
            Ok(None)
        }
        Command::Gc => {
            let keep = conf
                .valid_attachments
                .clone()
                .ok_or_else(|| CniError::InvalidConfig {
                    field: "cni.dev/valid-attachments".into(),
                    problem: "is missing: GC frees every address not listed, so without \
                              the list it cannot tell which pods are alive"
                        .into(),
                })?;
            agent.retain(keep).map_err(failed)?;
            Ok(None)
        }
        Command::Add | Command::Check => {
            agent.status().map_err(failed)?;
            Err(CniError::NotServedYet {
                what,
                verb: command,
                socket: conf.agent_socket.clone(),
            })
        }
        Command::Version => unreachable!("answered above"),
    }
}

/// What the spec asks of the configuration beyond its shape, per verb.
fn check_verb_allowed(command: Command, conf: &NetConf) -> Result<(), CniError> {
    let needs = match command {
        Command::Check if !conf.cni_version.has_check() => Some(CniVersion::V0_4_0),
        Command::Status | Command::Gc if !conf.cni_version.has_status_and_gc() => {
            Some(CniVersion::V1_1_0)
        }
        _ => None,
    };
    if let Some(needs) = needs {
        return Err(CniError::VerbNeedsNewerVersion {
            verb: command,
            needs,
            has: conf.cni_version,
        });
    }
    if command == Command::Check && conf.prev_result.is_none() {
        return Err(CniError::InvalidConfig {
            field: "prevResult".into(),
            problem: "is missing: CHECK compares against the result of the ADD".into(),
        });
    }
    Ok(())
}

/// The attachment an attachment verb is about (env::read made sure both
/// names are there).
fn attachment_of(env: &Env) -> lash_api::Attachment {
    lash_api::Attachment::new(
        env.container_id.as_deref().unwrap_or_default(),
        env.ifname.as_deref().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::json;

    use super::*;

    fn run_with(vars: &[(&str, &str)], stdin: &str) -> Reply {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        run(&|k: &str| map.get(k).cloned(), stdin.as_bytes())
    }

    fn code(reply: &Reply) -> u32 {
        reply.outcome.as_ref().unwrap_err().code()
    }

    const SOCKET: &str = "/nonexistent/lash-test/cni.sock";

    fn plugin_conf(version: &str) -> String {
        json!({"cniVersion": version, "name": "lash", "type": "lash-cni", "agentSocket": SOCKET})
            .to_string()
    }

    fn list_conf(version: &str) -> String {
        json!({"cniVersion": version, "name": "lash",
               "plugins": [{"type": "lash-cni", "agentSocket": SOCKET}]})
        .to_string()
    }

    const ADD_ENV: [(&str, &str); 4] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "abc"),
        ("CNI_NETNS", "/run/netns/pod"),
        ("CNI_IFNAME", "eth0"),
    ];

    #[test]
    fn version_answers_without_config() {
        let reply = run_with(&[("CNI_COMMAND", "VERSION")], "");
        let v = reply.outcome.unwrap().unwrap();
        assert_eq!(v["cniVersion"], "1.1.0");
    }

    #[test]
    fn add_with_valid_input_reports_the_unreachable_agent() {
        let reply = run_with(&ADD_ENV, &plugin_conf("1.0.0"));
        assert_eq!(code(&reply), 11);
        assert_eq!(reply.cni_version, CniVersion::V1_0_0);
        let err = reply.outcome.unwrap_err();
        assert!(err.msg().contains(SOCKET), "{}", err.msg());
    }

    #[test]
    fn env_is_checked_before_config() {
        let reply = run_with(&[("CNI_COMMAND", "ADD")], "{");
        assert_eq!(code(&reply), 4);
    }

    #[test]
    fn del_without_netns_still_needs_the_agent() {
        // (The agent is unreachable here: the reply is 11, not success.)
        let env = [
            ("CNI_COMMAND", "DEL"),
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert_eq!(code(&run_with(&env, &plugin_conf("1.0.0"))), 11);
    }

    #[test]
    fn check_needs_0_4_0_and_a_prev_result() {
        let mut env = ADD_ENV;
        env[0] = ("CNI_COMMAND", "CHECK");
        assert_eq!(code(&run_with(&env, &plugin_conf("0.3.1"))), 1);
        let reply = run_with(&env, &plugin_conf("1.0.0"));
        assert_eq!(code(&reply), 7);
        assert!(reply.outcome.unwrap_err().msg().contains("prevResult"));
        let mut conf: Value = serde_json::from_str(&plugin_conf("1.0.0")).unwrap();
        conf["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/32"}]});
        assert_eq!(code(&run_with(&env, &conf.to_string())), 11);
    }

    #[test]
    fn status_and_gc_need_1_1_0() {
        let status = [("CNI_COMMAND", "STATUS")];
        let gc = [("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")];
        for conf in [list_conf("1.0.0"), plugin_conf("1.0.0")] {
            assert_eq!(code(&run_with(&status, &conf)), 1);
            assert_eq!(code(&run_with(&gc, &conf)), 1);
        }
        for conf in [list_conf("1.1.0"), plugin_conf("1.1.0")] {
            assert_eq!(code(&run_with(&status, &conf)), 50);
            assert_eq!(code(&run_with(&gc, &conf)), 7, "no attachment list");
            let mut with_list: Value = serde_json::from_str(&conf).unwrap();
            with_list["cni.dev/valid-attachments"] = json!([]);
            assert_eq!(code(&run_with(&gc, &with_list.to_string())), 11);
        }
    }

    #[test]
    fn errors_answer_in_the_configs_version_when_we_speak_it() {
        let reply = run_with(&[("CNI_COMMAND", "ADD")], &plugin_conf("0.4.0"));
        assert_eq!(reply.cni_version, CniVersion::V0_4_0);
        let reply = run_with(&[("CNI_COMMAND", "ADD")], &plugin_conf("0.2.0"));
        assert_eq!(reply.cni_version, CniVersion::V1_1_0);
    }
}

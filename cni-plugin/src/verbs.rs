//! One invocation, from environment and stdin to the reply: which verb, are
//! its variables and configuration valid, then the verb (add.rs, check.rs,
//! del.rs, gc.rs; STATUS is one question to the agent).
//!
//! An agent that cannot be reached, or does not answer, is the spec's "try
//! again later" (11) naming the socket, or 50 for STATUS. That holds for DEL
//! too: the spec wants DEL to succeed when what it would remove is already
//! gone, but without the agent we cannot know that, and a runtime retries a
//! DEL that failed with 11.

use serde_json::Value;

use crate::{
    add,
    agent::{Agent, AgentProblem},
    check,
    config::{self, NetConf},
    del,
    env::{self, Command, Env},
    error::CniError,
    gc, lxc_name,
    netns::NetnsError,
    rtnl::NetError,
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

/// One verb's inputs, once validated, and how its failures are worded.
pub struct Call<'a> {
    pub env: &'a Env,
    pub agent: Agent,
    /// The verb and, for attachment verbs, the attachment ("ADD of
    /// abc/eth0"): runtime logs hold many failures at once.
    pub what: String,
}

impl Call<'_> {
    /// The attachment's container id (env::read made sure it is there for
    /// attachment verbs).
    pub fn container_id(&self) -> &str {
        self.env.container_id.as_deref().unwrap_or_default()
    }

    pub fn ifname(&self) -> &str {
        self.env.ifname.as_deref().unwrap_or_default()
    }

    /// CNI_NETNS (env::read made sure ADD and CHECK have it).
    pub fn netns_path(&self) -> &std::path::Path {
        self.env
            .netns
            .as_deref()
            .unwrap_or(std::path::Path::new(""))
    }

    pub fn attachment(&self) -> lash_api::Attachment {
        lash_api::Attachment::new(self.container_id(), self.ifname())
    }

    /// The attachment's host-side veth.
    pub fn host_ifname(&self) -> String {
        lxc_name::host_veth_name(self.container_id(), self.ifname())
    }

    pub fn agent_failed(&self, problem: AgentProblem) -> CniError {
        CniError::Agent {
            what: self.what.clone(),
            problem,
        }
    }

    pub fn net_failed(&self, source: NetError) -> CniError {
        CniError::Net {
            what: self.what.clone(),
            source,
        }
    }

    pub fn netns_failed(&self, source: NetnsError) -> CniError {
        CniError::Netns {
            what: self.what.clone(),
            source,
        }
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
    let what = match (&env.container_id, &env.ifname) {
        (Some(id), Some(ifname)) => format!("{command} of {id}/{ifname}"),
        _ => command.to_string(),
    };
    let call = Call {
        env: &env,
        agent: Agent::new(&conf.agent_socket),
        what,
    };
    match command {
        Command::Status => {
            call.agent.ready_for_add().map_err(CniError::NotReady)?;
            Ok(None)
        }
        Command::Add => {
            let result = add::add(&call)?;
            Ok(Some(result.to_json(conf.cni_version)))
        }
        Command::Check => {
            let prev = conf.prev_result.as_ref().expect("check_verb_allowed");
            check::check(&call, prev)?;
            Ok(None)
        }
        Command::Del => {
            del::del(&call)?;
            Ok(None)
        }
        Command::Gc => {
            let keep =
                conf.valid_attachments
                    .as_deref()
                    .ok_or_else(|| CniError::InvalidConfig {
                        field: "cni.dev/valid-attachments".into(),
                        problem: "is missing: GC frees every address not listed, so without \
                              the list it cannot tell which pods are alive"
                            .into(),
                    })?;
            gc::gc(&call, keep)?;
            Ok(None)
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
        // A prevResult that does not say what ADD made is a bad config...
        conf["prevResult"] = json!({"cniVersion": "1.0.0", "ips": [{"address": "10.0.0.5/32"}]});
        assert_eq!(code(&run_with(&env, &conf.to_string())), 7);
        // ...one that does is checked, which needs the agent.
        conf["prevResult"] = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/run/netns/pod"}],
            "ips": [{"address": "10.0.0.5/32", "gateway": "10.0.0.1", "interface": 0}]});
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

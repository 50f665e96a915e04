//! The network configuration on stdin.
//!
//! Two shapes arrive:
//! - a plugin configuration (what the spec has runtimes pass to every verb:
//!   the plugin's own object with `cniVersion` and `name` inserted, plus
//!   `prevResult`, `runtimeConfig` or `cni.dev/…` keys as the verb needs);
//! - a configuration list (`plugins: [...]`), the file format, which some
//!   callers hand to STATUS and GC as is. We take our own entry from it (the
//!   one whose `type` is `lash-cni`). The attachment verbs (ADD, DEL, CHECK)
//!   only ever get the first shape; a list there is refused.
//!
//! Checks run in the order a reader would want the first complaint:
//! JSON (6), then `cniVersion` (7 if missing, 1 if we do not speak it), then
//! the rest (7), each naming its field.

use lash_api::Attachment;
use std::path::PathBuf;

use serde_json::{Map, Value};

use crate::{
    agent,
    env::{check_container_id, Command},
    error::CniError,
    result::AddResult,
    version::CniVersion,
};

/// Our binary's name, which is the `type` runtimes look us up by.
pub const PLUGIN_TYPE: &str = "lash-cni";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Plugin,
    List,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: CniVersion,
    pub name: String,
    pub shape: Shape,
    /// lash's own: where the agent listens (`agentSocket`).
    pub agent_socket: PathBuf,
    pub prev_result: Option<AddResult>,
    /// Capability arguments (`runtimeConfig`), kept as given.
    pub runtime_config: Map<String, Value>,
    /// GC's list of live attachments; None when the runtime sent none (not
    /// the same as an empty list, which means "none is alive").
    pub valid_attachments: Option<Vec<Attachment>>,
}

/// "an array", "a number"... for messages.
pub fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> CniError {
    CniError::InvalidConfig {
        field: field.into(),
        problem: problem.into(),
    }
}

fn string_field<'a>(
    o: &'a Map<String, Value>,
    key: &str,
    at: &str,
) -> Result<Option<&'a str>, CniError> {
    match o.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(invalid(
            format!("{at}{key}"),
            format!("must be a string, found {}", json_kind(other)),
        )),
    }
}

/// Reads `cniVersion` only: enough to answer errors in the caller's version
/// even when the rest of the configuration is bad.
pub fn peek_version(stdin: &[u8]) -> Option<CniVersion> {
    let v: Value = serde_json::from_slice(stdin).ok()?;
    CniVersion::parse(v.get("cniVersion")?.as_str()?)
}

pub fn parse(stdin: &[u8], command: Command) -> Result<NetConf, CniError> {
    let value: Value = serde_json::from_slice(stdin).map_err(CniError::NotJson)?;
    let Value::Object(top) = value else {
        return Err(CniError::NotAnObject {
            found: json_kind(&value),
        });
    };

    let version =
        string_field(&top, "cniVersion", "")?.ok_or_else(|| invalid("cniVersion", "is missing"))?;
    let cni_version = CniVersion::parse(version).ok_or_else(|| CniError::UnsupportedVersion {
        requested: version.to_string(),
    })?;

    let name = string_field(&top, "name", "")?.ok_or_else(|| invalid("name", "is missing"))?;
    // The spec gives network names the container id's rule.
    if let Err(why) = check_container_id(name) {
        return Err(invalid("name", format!("{name:?} {why}")));
    }

    let (shape, plugin, at) = match (top.get("plugins"), top.get("type")) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "plugins",
                "and type are both set: a configuration is either one plugin's or a list",
            ))
        }
        (Some(plugins), None) => {
            if command.is_attachment_verb() {
                return Err(invalid(
                    "plugins",
                    format!(
                        "is set: {command} takes one plugin's configuration (with \"type\"), \
                         not a configuration list"
                    ),
                ));
            }
            let (index, entry) = own_entry(plugins)?;
            (Shape::List, entry, format!("plugins[{index}]."))
        }
        (None, Some(_)) => {
            let ty = string_field(&top, "type", "")?.unwrap_or_default();
            if ty.is_empty() {
                return Err(invalid("type", "must not be empty"));
            }
            (Shape::Plugin, &top, String::new())
        }
        (None, None) => return Err(invalid("type", "is missing (and there is no plugins list)")),
    };

    let agent_socket = match string_field(plugin, "agentSocket", &at)? {
        None => agent::default_socket(),
        Some(s) if s.starts_with('/') => PathBuf::from(s),
        Some(s) => {
            return Err(invalid(
                format!("{at}agentSocket"),
                format!("{s:?} must be an absolute path"),
            ))
        }
    };

    // Keys the runtime inserts: at the top, where it puts them.
    let prev_result = match top.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(v) => Some(AddResult::from_json(v).map_err(|e| {
            let field = if e.field.is_empty() {
                "prevResult".to_string()
            } else {
                format!("prevResult.{}", e.field)
            };
            invalid(field, e.problem)
        })?),
    };
    let runtime_config = match top.get("runtimeConfig") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(other) => {
            return Err(invalid(
                "runtimeConfig",
                format!("must be an object, found {}", json_kind(other)),
            ))
        }
    };
    let valid_attachments = attachments(&top)?;

    Ok(NetConf {
        cni_version,
        name: name.to_string(),
        shape,
        agent_socket,
        prev_result,
        runtime_config,
        valid_attachments,
    })
}

/// Our entry in a configuration list, and its index.
fn own_entry(plugins: &Value) -> Result<(usize, &Map<String, Value>), CniError> {
    let Value::Array(list) = plugins else {
        return Err(invalid(
            "plugins",
            format!("must be an array, found {}", json_kind(plugins)),
        ));
    };
    let mut ours = None;
    for (i, entry) in list.iter().enumerate() {
        let Value::Object(o) = entry else {
            return Err(invalid(
                format!("plugins[{i}]"),
                format!("must be an object, found {}", json_kind(entry)),
            ));
        };
        let ty = string_field(o, "type", &format!("plugins[{i}]."))?
            .ok_or_else(|| invalid(format!("plugins[{i}].type"), "is missing"))?;
        if ty == PLUGIN_TYPE && ours.is_none() {
            ours = Some((i, o));
        }
    }
    ours.ok_or_else(|| invalid("plugins", format!("has no entry of type {PLUGIN_TYPE:?}")))
}

/// `cni.dev/valid-attachments` (what libcni sends) or `cni.dev/attachments`
/// (the 1.1.0 spec text's name); libcni sends both, with the same list.
fn attachments(top: &Map<String, Value>) -> Result<Option<Vec<Attachment>>, CniError> {
    let Some((key, value)) = ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .into_iter()
        .find_map(|k| top.get(k).map(|v| (k, v)))
    else {
        return Ok(None);
    };
    let Value::Array(list) = value else {
        return Err(invalid(
            key,
            format!("must be an array, found {}", json_kind(value)),
        ));
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let Value::Object(o) = entry else {
            return Err(invalid(at, "must be an object"));
        };
        let field = |name: &str| -> Result<String, CniError> {
            string_field(o, name, &format!("{at}."))?
                .map(str::to_string)
                .ok_or_else(|| invalid(format!("{at}.{name}"), "is missing"))
        };
        out.push(Attachment::new(&field("containerID")?, &field("ifname")?));
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn parse_json(v: Value, command: Command) -> Result<NetConf, CniError> {
        parse(v.to_string().as_bytes(), command)
    }

    fn invalid_field(err: CniError) -> String {
        match err {
            CniError::InvalidConfig { field, .. } => field,
            other => panic!("not an invalid-config error: {other:?}"),
        }
    }

    #[test]
    fn minimal_plugin_config() {
        let c = parse_json(
            json!({"cniVersion":"1.0.0","name":"lash","type":"lash-cni"}),
            Command::Add,
        )
        .unwrap();
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.name, "lash");
        assert_eq!(c.shape, Shape::Plugin);
        assert_eq!(c.agent_socket, PathBuf::from("/run/lash/cni.sock"));
        assert_eq!(c.prev_result, None);
        assert!(c.runtime_config.is_empty());
        assert_eq!(c.valid_attachments, None);
    }

    #[test]
    fn minimal_list_for_status_and_gc() {
        let list = json!({"cniVersion":"1.0.0","name":"lash","plugins":[{"type":"lash-cni"}]});
        for cmd in [Command::Status, Command::Gc] {
            let c = parse_json(list.clone(), cmd).unwrap();
            assert_eq!(c.shape, Shape::List);
            assert_eq!(c.name, "lash");
        }
    }

    #[test]
    fn list_entry_carries_our_fields() {
        let c = parse_json(
            json!({"cniVersion":"1.1.0","name":"lash","plugins":[
                {"type":"portmap"},
                {"type":"lash-cni","agentSocket":"/tmp/agent.sock"}
            ]}),
            Command::Status,
        )
        .unwrap();
        assert_eq!(c.agent_socket, PathBuf::from("/tmp/agent.sock"));
    }

    #[test]
    fn lists_are_refused_for_attachment_verbs() {
        let list = json!({"cniVersion":"1.0.0","name":"lash","plugins":[{"type":"lash-cni"}]});
        for cmd in [Command::Add, Command::Del, Command::Check] {
            let err = parse_json(list.clone(), cmd).unwrap_err();
            assert_eq!(err.code(), 7);
            assert!(err.msg().contains(cmd.as_str()), "{}", err.msg());
        }
    }

    #[test]
    fn bad_json_is_6() {
        assert_eq!(parse(b"{", Command::Add).unwrap_err().code(), 6);
        assert_eq!(parse(b"", Command::Add).unwrap_err().code(), 6);
        assert_eq!(parse(b"[1]", Command::Add).unwrap_err().code(), 6);
    }

    #[test]
    fn version_problems() {
        let err = parse_json(json!({"name":"lash","type":"lash-cni"}), Command::Add).unwrap_err();
        assert_eq!(
            (err.code(), invalid_field(err)),
            (7, "cniVersion".to_string())
        );
        let err = parse_json(
            json!({"cniVersion":1,"name":"lash","type":"x"}),
            Command::Add,
        )
        .unwrap_err();
        assert_eq!(err.code(), 7);
        for v in ["0.2.0", "2.0.0", "latest"] {
            let err = parse_json(
                json!({"cniVersion":v,"name":"lash","type":"x"}),
                Command::Add,
            )
            .unwrap_err();
            assert_eq!(err.code(), 1, "{v}");
            assert!(err.msg().contains(v), "{}", err.msg());
            assert!(err.details().contains("1.1.0"), "{}", err.details());
        }
    }

    #[test]
    fn each_invalid_field_is_named() {
        let cases = [
            (json!({"cniVersion":"1.0.0","type":"lash-cni"}), "name"),
            (
                json!({"cniVersion":"1.0.0","name":"-x","type":"lash-cni"}),
                "name",
            ),
            (json!({"cniVersion":"1.0.0","name":"lash"}), "type"),
            (
                json!({"cniVersion":"1.0.0","name":"lash","type":""}),
                "type",
            ),
            (json!({"cniVersion":"1.0.0","name":"lash","type":7}), "type"),
            (
                json!({"cniVersion":"1.0.0","name":"lash","type":"lash-cni","agentSocket":"rel.sock"}),
                "agentSocket",
            ),
            (
                json!({"cniVersion":"1.0.0","name":"lash","type":"lash-cni","runtimeConfig":[]}),
                "runtimeConfig",
            ),
            (
                json!({"cniVersion":"1.0.0","name":"lash","type":"lash-cni",
                       "prevResult":{"ips":[{"address":"nope"}]}}),
                "prevResult.ips[0].address",
            ),
            (
                json!({"cniVersion":"1.0.0","name":"lash","type":"lash-cni","prevResult":1}),
                "prevResult",
            ),
        ];
        for (conf, field) in cases {
            let err = parse_json(conf.clone(), Command::Add).unwrap_err();
            assert_eq!(err.code(), 7, "{conf}");
            assert_eq!(invalid_field(err), field, "{conf}");
        }
        let list_cases = [
            (
                json!({"cniVersion":"1.1.0","name":"lash","plugins":{}}),
                "plugins",
            ),
            (
                json!({"cniVersion":"1.1.0","name":"lash","plugins":[1]}),
                "plugins[0]",
            ),
            (
                json!({"cniVersion":"1.1.0","name":"lash","plugins":[{}]}),
                "plugins[0].type",
            ),
            (
                json!({"cniVersion":"1.1.0","name":"lash","plugins":[{"type":"bridge"}]}),
                "plugins",
            ),
            (
                json!({"cniVersion":"1.1.0","name":"lash",
                       "plugins":[{"type":"lash-cni","agentSocket":"x"}]}),
                "plugins[0].agentSocket",
            ),
            (
                json!({"cniVersion":"1.1.0","name":"lash","type":"lash-cni","plugins":[]}),
                "plugins",
            ),
        ];
        for (conf, field) in list_cases {
            let err = parse_json(conf.clone(), Command::Gc).unwrap_err();
            assert_eq!(invalid_field(err), field, "{conf}");
        }
    }

    #[test]
    fn prev_result_and_runtime_config_are_kept() {
        let c = parse_json(
            json!({"cniVersion":"0.4.0","name":"lash","type":"lash-cni",
                   "runtimeConfig":{"portMappings":[]},
                   "prevResult":{"cniVersion":"0.4.0",
                       "interfaces":[{"name":"eth0","sandbox":"/run/netns/p"}],
                       "ips":[{"version":"4","address":"10.0.0.5/32","interface":0}]}}),
            Command::Check,
        )
        .unwrap();
        let prev = c.prev_result.unwrap();
        assert_eq!(prev.interfaces[0].name, "eth0");
        assert_eq!(prev.ips[0].address.to_string(), "10.0.0.5/32");
        assert!(c.runtime_config.contains_key("portMappings"));
    }

    #[test]
    fn gc_attachments_under_either_name() {
        for key in ["cni.dev/valid-attachments", "cni.dev/attachments"] {
            let mut conf = json!({"cniVersion":"1.1.0","name":"lash","type":"lash-cni"});
            conf[key] = json!([{"containerID":"abc","ifname":"eth0"}]);
            let c = parse_json(conf, Command::Gc).unwrap();
            assert_eq!(
                c.valid_attachments,
                Some(vec![Attachment::new("abc", "eth0")])
            );
        }
        let c = parse_json(
            json!({"cniVersion":"1.1.0","name":"lash","type":"lash-cni","cni.dev/attachments":[]}),
            Command::Gc,
        )
        .unwrap();
        assert_eq!(c.valid_attachments, Some(vec![]));
        let err = parse_json(
            json!({"cniVersion":"1.1.0","name":"lash","type":"lash-cni",
                   "cni.dev/valid-attachments":[{"containerID":"abc"}]}),
            Command::Gc,
        )
        .unwrap_err();
        assert_eq!(invalid_field(err), "cni.dev/valid-attachments[0].ifname");
    }

    #[test]
    fn peek_version_reads_only_the_version() {
        assert_eq!(
            peek_version(br#"{"cniVersion":"0.3.1","name":"-bad"}"#),
            Some(CniVersion::V0_3_1)
        );
        assert_eq!(peek_version(br#"{"cniVersion":"9.9.9"}"#), None);
        assert_eq!(peek_version(b"{"), None);
    }
}

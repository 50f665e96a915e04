//! The `CNI_*` environment variables: which verb, and the attachment it is
//! about. Which variables a verb needs is the spec's table (1.1.0, section 2):
//!
//! | verb    | required                                   | used if set          |
//! |---------|--------------------------------------------|----------------------|
//! | ADD     | CONTAINERID, NETNS, IFNAME                 | ARGS, PATH           |
//! | CHECK   | CONTAINERID, NETNS, IFNAME                 | ARGS, PATH           |
//! | DEL     | CONTAINERID, IFNAME                        | NETNS, ARGS, PATH    |
//! | GC      | PATH                                       |                      |
//! | STATUS  |                                            | PATH                 |
//! | VERSION |                                            |                      |
//!
//! A variable set to the empty string counts as unset (runtimes pass an empty
//! CNI_NETNS to DEL once the namespace is gone). Variables a verb does not use
//! are not read, so a stale one cannot fail it. Every problem is reported at
//! once, each naming its variable (error 4).

use std::{fmt, path::PathBuf};

use crate::error::{CniError, EnvProblem};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    pub fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            "VERSION" => Command::Version,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Status => "STATUS",
            Command::Gc => "GC",
            Command::Version => "VERSION",
        }
    }

    /// Verbs about one attachment (container id + interface).
    pub fn is_attachment_verb(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the environment says, validated for one verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// CNI_ARGS as key/value pairs, in the order given.
    pub args: Vec<(String, String)>,
    pub path: Vec<PathBuf>,
}

/// Which variable, whether the verb requires it, and whether it reads it.
#[derive(Clone, Copy)]
enum Need {
    Required,
    Optional,
    Unused,
}

fn need(command: Command, var: &str) -> Need {
    use Command::*;
    match (command, var) {
        (Add | Check, "CNI_CONTAINERID" | "CNI_NETNS" | "CNI_IFNAME") => Need::Required,
        (Add | Check, "CNI_ARGS" | "CNI_PATH") => Need::Optional,
        (Del, "CNI_CONTAINERID" | "CNI_IFNAME") => Need::Required,
        (Del, "CNI_NETNS" | "CNI_ARGS" | "CNI_PATH") => Need::Optional,
        (Gc, "CNI_PATH") => Need::Required,
        (Status, "CNI_PATH") => Need::Optional,
        _ => Need::Unused,
    }
}

/// CNI_COMMAND alone: it decides everything else.
pub fn command(lookup: &impl Fn(&str) -> Option<String>) -> Result<Command, CniError> {
    match lookup("CNI_COMMAND").filter(|v| !v.is_empty()) {
        None => Err(CniError::Env(vec![EnvProblem::missing(
            "CNI_COMMAND",
            "every invocation needs it",
        )])),
        Some(v) => Command::parse(&v).ok_or_else(|| {
            CniError::Env(vec![EnvProblem::invalid(
                "CNI_COMMAND",
                &v,
                "must be one of ADD, DEL, CHECK, STATUS, GC, VERSION",
            )])
        }),
    }
}

/// Reads and checks the variables `command` uses. `lookup` is the process
/// environment in the binary and a map in tests.
pub fn read(command: Command, lookup: &impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
    let mut problems = Vec::new();
    let mut get = |var: &'static str| -> Option<String> {
        let need = need(command, var);
        if matches!(need, Need::Unused) {
            return None;
        }
        let value = lookup(var).filter(|v| !v.is_empty());
        if value.is_none() && matches!(need, Need::Required) {
            problems.push(EnvProblem::missing(var, &format!("{command} needs it")));
        }
        value
    };
    let container_id = get("CNI_CONTAINERID");
    let netns = get("CNI_NETNS");
    let ifname = get("CNI_IFNAME");
    let args = get("CNI_ARGS");
    let path = get("CNI_PATH");

    if let Some(id) = &container_id {
        if let Err(why) = check_container_id(id) {
            problems.push(EnvProblem::invalid("CNI_CONTAINERID", id, why));
        }
    }
    if let Some(ns) = &netns {
        if !ns.starts_with('/') {
            problems.push(EnvProblem::invalid(
                "CNI_NETNS",
                ns,
                "must be an absolute path to a network namespace",
            ));
        }
    }
    if let Some(name) = &ifname {
        if let Err(why) = check_ifname(name) {
            problems.push(EnvProblem::invalid("CNI_IFNAME", name, why));
        }
    }
    let args = match args.as_deref().map(parse_args).transpose() {
        Ok(pairs) => pairs.unwrap_or_default(),
        Err(why) => {
            problems.push(EnvProblem::invalid(
                "CNI_ARGS",
                args.as_deref().unwrap_or_default(),
                &why,
            ));
            Vec::new()
        }
    };
    let path = path
        .map(|p| {
            p.split(':')
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .collect()
        })
        .unwrap_or_default();

    if !problems.is_empty() {
        return Err(CniError::Env(problems));
    }
    Ok(Env {
        command,
        container_id,
        netns: netns.map(PathBuf::from),
        ifname,
        args,
        path,
    })
}

/// The spec's rule: starts with an alphanumeric character, then alphanumerics,
/// '_', '.' or '-'.
pub fn check_container_id(id: &str) -> Result<(), &'static str> {
    let mut chars = id.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() => {}
        _ => return Err("must start with a letter or digit"),
    }
    if chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')) {
        Ok(())
    } else {
        Err("may only hold letters, digits, '_', '.' and '-'")
    }
}

/// The spec's (and the kernel's) rule for an interface name: not empty, not
/// "." or "..", under 16 bytes, no '/', ':' or whitespace.
pub fn check_ifname(name: &str) -> Result<(), &'static str> {
    if name == "." || name == ".." {
        return Err("must not be \".\" or \"..\"");
    }
    if name.len() >= 16 {
        return Err("must be shorter than 16 bytes");
    }
    if name.contains('/') {
        return Err("must not contain '/'");
    }
    if name.contains(':') {
        return Err("must not contain ':'");
    }
    if name.chars().any(char::is_whitespace) {
        return Err("must not contain whitespace");
    }
    Ok(())
}

/// `K=V;K=V`. Empty segments (a trailing ';') are skipped; a segment without
/// '=' or with an empty key is an error. Values may themselves contain '='.
pub fn parse_args(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(';')
        .filter(|seg| !seg.is_empty())
        .map(|seg| match seg.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(format!("{seg:?} is not KEY=VALUE")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn add_env() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "abc123"),
            ("CNI_NETNS", "/run/netns/pod"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0"),
            ("CNI_PATH", "/opt/cni/bin::/usr/lib/cni"),
        ]
    }

    fn problems(err: CniError) -> Vec<String> {
        match err {
            CniError::Env(p) => p.iter().map(|p| p.var.to_string()).collect(),
            other => panic!("not an env error: {other:?}"),
        }
    }

    #[test]
    fn command_is_required_and_known() {
        assert_eq!(command(&lookup(&[])).unwrap_err().code(), 4);
        assert_eq!(
            command(&lookup(&[("CNI_COMMAND", "")])).unwrap_err().code(),
            4
        );
        let err = command(&lookup(&[("CNI_COMMAND", "add")])).unwrap_err();
        assert!(err.msg().contains("CNI_COMMAND"), "{}", err.msg());
        for (s, c) in [
            ("ADD", Command::Add),
            ("GC", Command::Gc),
            ("STATUS", Command::Status),
        ] {
            assert_eq!(command(&lookup(&[("CNI_COMMAND", s)])).unwrap(), c);
        }
    }

    #[test]
    fn add_reads_everything() {
        let env = read(Command::Add, &lookup(&add_env())).unwrap();
        assert_eq!(env.container_id.as_deref(), Some("abc123"));
        assert_eq!(env.netns, Some(PathBuf::from("/run/netns/pod")));
        assert_eq!(env.ifname.as_deref(), Some("eth0"));
        assert_eq!(
            env.args,
            vec![
                ("K8S_POD_NAMESPACE".into(), "default".into()),
                ("K8S_POD_NAME".into(), "web-0".into())
            ]
        );
        assert_eq!(
            env.path,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn add_reports_every_missing_variable_by_name() {
        let err = read(Command::Add, &lookup(&[("CNI_COMMAND", "ADD")])).unwrap_err();
        assert_eq!(err.code(), 4);
        assert_eq!(
            problems(err),
            ["CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME"]
        );
    }

    #[test]
    fn del_does_without_netns() {
        let vars = [
            ("CNI_CONTAINERID", "abc"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", ""),
        ];
        let env = read(Command::Del, &lookup(&vars)).unwrap();
        assert_eq!(env.netns, None);
        let err = read(Command::Del, &lookup(&[("CNI_IFNAME", "eth0")])).unwrap_err();
        assert_eq!(problems(err), ["CNI_CONTAINERID"]);
    }

    #[test]
    fn gc_needs_path_and_ignores_attachment_variables() {
        let err = read(Command::Gc, &lookup(&[])).unwrap_err();
        assert_eq!(problems(err), ["CNI_PATH"]);
        // A stale, invalid CNI_IFNAME is not GC's business.
        let env = read(
            Command::Gc,
            &lookup(&[("CNI_PATH", "/opt/cni/bin"), ("CNI_IFNAME", "a/b")]),
        )
        .unwrap();
        assert_eq!(env.ifname, None);
    }

    #[test]
    fn status_and_version_need_nothing() {
        assert!(read(Command::Status, &lookup(&[])).is_ok());
        assert!(read(Command::Version, &lookup(&[])).is_ok());
    }

    #[test]
    fn invalid_values_name_the_variable_and_the_value() {
        let mut vars = add_env();
        vars.retain(|(k, _)| *k != "CNI_IFNAME" && *k != "CNI_NETNS" && *k != "CNI_ARGS");
        vars.push(("CNI_IFNAME", "this-is-too-long0"));
        vars.push(("CNI_NETNS", "run/netns/pod"));
        vars.push(("CNI_ARGS", "A=1;junk"));
        let err = read(Command::Add, &lookup(&vars)).unwrap_err();
        let details = err.details();
        assert!(details.contains("\"this-is-too-long0\""), "{details}");
        assert!(details.contains("\"junk\" is not KEY=VALUE"), "{details}");
        assert_eq!(problems(err), ["CNI_NETNS", "CNI_IFNAME", "CNI_ARGS"]);
    }

    #[test]
    fn container_id_rule() {
        for ok in ["a", "0abc", "a_b.c-d", "3f2b9c0e1d"] {
            assert!(check_container_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "_a", "a b", "a/b", "a:b"] {
            assert!(check_container_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ifname_rule() {
        for ok in ["eth0", "net1", "a", "fifteen-chars-x"] {
            assert!(check_ifname(ok).is_ok(), "{ok}");
        }
        for bad in [".", "..", "sixteen-chars-xx", "a/b", "a:b", "a b", "a\tb"] {
            assert!(check_ifname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn args_rule() {
        assert_eq!(parse_args("").unwrap(), vec![]);
        assert_eq!(
            parse_args("IgnoreUnknown=1;A=b=c;").unwrap(),
            vec![
                ("IgnoreUnknown".into(), "1".into()),
                ("A".into(), "b=c".into())
            ]
        );
        assert!(parse_args("=x").is_err());
        assert!(parse_args("A").is_err());
    }
}

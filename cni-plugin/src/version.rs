//! The CNI spec versions lash-cni speaks, what each one changes for us, and
//! the answer to `VERSION`.
//!
//! 0.1.0 and 0.2.0 are left out on purpose: their results have another shape
//! altogether (`ip4`/`ip6` objects instead of `ips`), and no runtime we target
//! still sends them. A config asking for them gets error 1.

use std::fmt;

use serde_json::{json, Value};

use crate::error::CniError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CniVersion {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl CniVersion {
    /// Oldest first, as `supportedVersions` lists them.
    pub const ALL: [CniVersion; 5] = [
        CniVersion::V0_3_0,
        CniVersion::V0_3_1,
        CniVersion::V0_4_0,
        CniVersion::V1_0_0,
        CniVersion::V1_1_0,
    ];

    /// The version we answer in when the caller named none we can use.
    pub const LATEST: CniVersion = CniVersion::V1_1_0;

    pub fn parse(s: &str) -> Option<CniVersion> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CniVersion::V0_3_0 => "0.3.0",
            CniVersion::V0_3_1 => "0.3.1",
            CniVersion::V0_4_0 => "0.4.0",
            CniVersion::V1_0_0 => "1.0.0",
            CniVersion::V1_1_0 => "1.1.0",
        }
    }

    /// CHECK came with 0.4.0.
    pub fn has_check(self) -> bool {
        self >= CniVersion::V0_4_0
    }

    /// STATUS and GC came with 1.1.0.
    pub fn has_status_and_gc(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// Before 1.0.0 every entry of `ips` said its family ("4" or "6").
    pub fn ips_carry_family(self) -> bool {
        self < CniVersion::V1_0_0
    }

    /// 1.1.0 added `mtu`, `socketPath` and `pciID` to interfaces and `mtu`,
    /// `advmss`, `priority`, `table` and `scope` to routes.
    pub fn has_link_details(self) -> bool {
        self >= CniVersion::V1_1_0
    }

    /// "0.3.0, 0.3.1, ..." for messages.
    pub fn supported_list() -> String {
        Self::ALL.map(CniVersion::as_str).join(", ")
    }
}

impl fmt::Display for CniVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `VERSION` answer. The spec has it echo the `cniVersion` the caller
/// sent (whatever it is: the caller is asking which versions we speak, so an
/// unknown one is no error); with nothing on stdin, or no `cniVersion`, we
/// answer in the latest.
pub fn version_reply(stdin: &[u8]) -> Result<Value, CniError> {
    let requested = requested_version(stdin)?;
    Ok(json!({
        "cniVersion": requested.unwrap_or_else(|| CniVersion::LATEST.as_str().to_string()),
        "supportedVersions": CniVersion::ALL.map(CniVersion::as_str),
    }))
}

fn requested_version(stdin: &[u8]) -> Result<Option<String>, CniError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(stdin).map_err(CniError::NotJson)?;
    let Value::Object(obj) = value else {
        return Err(CniError::NotAnObject {
            found: crate::config::json_kind(&value),
        });
    };
    match obj.get("cniVersion") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CniError::InvalidConfig {
            field: "cniVersion".into(),
            problem: format!(
                "must be a string, found {}",
                crate::config::json_kind(other)
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_supported_version_and_nothing_else() {
        for v in CniVersion::ALL {
            assert_eq!(CniVersion::parse(v.as_str()), Some(v));
        }
        for s in ["0.1.0", "0.2.0", "1.2.0", "1.1", "", "v1.0.0"] {
            assert_eq!(CniVersion::parse(s), None, "{s:?}");
        }
    }

    #[test]
    fn feature_gates_follow_the_spec_history() {
        assert!(!CniVersion::V0_3_1.has_check());
        assert!(CniVersion::V0_4_0.has_check());
        assert!(!CniVersion::V1_0_0.has_status_and_gc());
        assert!(CniVersion::V1_1_0.has_status_and_gc());
        assert!(CniVersion::V0_4_0.ips_carry_family());
        assert!(!CniVersion::V1_0_0.ips_carry_family());
        assert!(!CniVersion::V1_0_0.has_link_details());
    }

    #[test]
    fn version_echoes_the_requested_version() {
        let v = version_reply(br#"{"cniVersion":"0.4.0"}"#).unwrap();
        assert_eq!(v["cniVersion"], "0.4.0");
        assert_eq!(
            v["supportedVersions"],
            json!(["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"])
        );
        // A version we do not speak is still echoed: the list says what we do.
        let v = version_reply(br#"{"cniVersion":"0.2.0"}"#).unwrap();
        assert_eq!(v["cniVersion"], "0.2.0");
    }

    #[test]
    fn version_defaults_to_latest_without_input() {
        assert_eq!(version_reply(b"").unwrap()["cniVersion"], "1.1.0");
        assert_eq!(version_reply(b" \n").unwrap()["cniVersion"], "1.1.0");
        assert_eq!(version_reply(b"{}").unwrap()["cniVersion"], "1.1.0");
    }

    #[test]
    fn version_rejects_undecodable_input() {
        assert_eq!(version_reply(b"{nope").unwrap_err().code(), 6);
        assert_eq!(version_reply(b"[]").unwrap_err().code(), 6);
        assert_eq!(version_reply(br#"{"cniVersion":1}"#).unwrap_err().code(), 7);
    }
}

//! The node's pod range, `--pod-cidr`: an IPv4 prefix and the three
//! addresses in it that no pod gets (network, gateway, broadcast).

use std::{fmt, net::Ipv4Addr, str::FromStr};

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The longest prefix accepted: a /30 is network, gateway, one pod and
/// broadcast. /31 and /32 leave no address for a pod.
pub const MAX_PREFIX: u8 = 30;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CidrError {
    #[error("{input:?} is not an IPv4 CIDR (expected ADDRESS/PREFIX, e.g. 10.244.0.0/24)")]
    Syntax { input: String },
    #[error("{input:?} has host bits set; the range starts at {network}/{prefix}")]
    HostBits {
        input: String,
        network: Ipv4Addr,
        prefix: u8,
    },
    #[error(
        "{input:?} is too small for pods: the prefix must be at most /{MAX_PREFIX} \
         (network, gateway and broadcast are never handed out)"
    )]
    TooSmall { input: String },
}

/// An IPv4 prefix whose host bits are zero. Written and read as `a.b.c.d/n`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    fn mask(prefix: u8) -> u32 {
        // A shift by 32 would overflow: /0 masks nothing.
        u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
    }

    /// The base address.
    pub fn network(self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(self) -> u8 {
        self.prefix
    }

    pub fn broadcast(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !Self::mask(self.prefix))
    }

    /// The node's side of every pod's route: the first usable address.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// The first and last address a pod may get (both inclusive).
    pub fn pod_range(self) -> (u32, u32) {
        (u32::from(self.network) + 2, u32::from(self.broadcast()) - 1)
    }

    /// How many addresses pods may get: the range less network, gateway and
    /// broadcast.
    pub fn pod_capacity(self) -> u64 {
        let (lo, hi) = self.pod_range();
        u64::from(hi - lo) + 1
    }

    /// Whether a pod may hold `addr`.
    pub fn is_pod_address(self, addr: Ipv4Addr) -> bool {
        let (lo, hi) = self.pod_range();
        (lo..=hi).contains(&u32::from(addr))
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, CidrError> {
        let syntax = || CidrError::Syntax {
            input: input.into(),
        };
        let (addr, prefix) = input.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        // Digits only: u8's parser would take "+24".
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let prefix: u8 = prefix.parse().map_err(|_| syntax())?;
        if prefix > 32 {
            return Err(syntax());
        }
        let network = Ipv4Addr::from(u32::from(addr) & Self::mask(prefix));
        if network != addr {
            // A typo here would shift the whole range; say what was meant
            // instead of guessing.
            return Err(CidrError::HostBits {
                input: input.into(),
                network,
                prefix,
            });
        }
        if prefix > MAX_PREFIX {
            return Err(CidrError::TooSmall {
                input: input.into(),
            });
        }
        Ok(Self { network, prefix })
    }
}

impl TryFrom<String> for Ipv4Cidr {
    type Error = CidrError;

    fn try_from(s: String) -> Result<Self, CidrError> {
        s.parse()
    }
}

impl From<Ipv4Cidr> for String {
    fn from(c: Ipv4Cidr) -> String {
        c.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slash_24_has_253_pod_addresses_after_the_gateway() {
        let c: Ipv4Cidr = "10.244.0.0/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.244.0.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 0, 1));
        assert_eq!(c.broadcast(), Ipv4Addr::new(10, 244, 0, 255));
        assert_eq!(c.pod_capacity(), 253);
        assert!(!c.is_pod_address(Ipv4Addr::new(10, 244, 0, 0)));
        assert!(!c.is_pod_address(Ipv4Addr::new(10, 244, 0, 1)));
        assert!(c.is_pod_address(Ipv4Addr::new(10, 244, 0, 2)));
        assert!(c.is_pod_address(Ipv4Addr::new(10, 244, 0, 254)));
        assert!(!c.is_pod_address(Ipv4Addr::new(10, 244, 0, 255)));
        assert!(!c.is_pod_address(Ipv4Addr::new(10, 244, 1, 2)));
    }

    #[test]
    fn edges_of_the_prefix_length() {
        let c: Ipv4Cidr = "192.168.7.4/30".parse().unwrap();
        assert_eq!(c.pod_capacity(), 1);
        assert_eq!(c.pod_range().0, u32::from(Ipv4Addr::new(192, 168, 7, 6)));
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert_eq!(all.broadcast(), Ipv4Addr::BROADCAST);
        assert_eq!(all.pod_capacity(), (1u64 << 32) - 3);
    }

    #[test]
    fn bad_input_is_refused_saying_why() {
        for bad in [
            "10.244.0.0",
            "10.244.0/24",
            "10.244.0.0/33",
            "10.244.0.0/+24",
            "x/24",
        ] {
            assert!(
                matches!(bad.parse::<Ipv4Cidr>(), Err(CidrError::Syntax { .. })),
                "{bad}"
            );
        }
        let err = "10.244.0.5/24".parse::<Ipv4Cidr>().unwrap_err();
        assert!(err.to_string().contains("10.244.0.0/24"), "{err}");
        assert!(matches!(
            "10.244.0.0/31".parse::<Ipv4Cidr>(),
            Err(CidrError::TooSmall { .. })
        ));
    }

    #[test]
    fn json_is_the_text_form() {
        let c: Ipv4Cidr = "10.244.0.0/24".parse().unwrap();
        assert_eq!(serde_json::to_string(&c).unwrap(), "\"10.244.0.0/24\"");
        assert_eq!(
            serde_json::from_str::<Ipv4Cidr>("\"10.244.0.0/24\"").unwrap(),
            c
        );
        assert!(serde_json::from_str::<Ipv4Cidr>("\"10.244.0.1/24\"").is_err());
    }
}

//! MAC addresses for the veth ends: random, locally administered, unicast
//! (the kernel would pick random ones too, but ADD must know them to report
//! them, and choosing them here saves reading them back).

use std::{fmt, fs::File, io, io::Read, str::FromStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// A fresh random address.
    pub fn random() -> io::Result<Mac> {
        let mut bytes = [0u8; 6];
        File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        Ok(Mac::from_random(bytes))
    }

    /// Random bytes made a locally administered (bit 1 of the first octet)
    /// unicast (bit 0 clear) address, so it can collide with no vendor's.
    pub fn from_random(mut bytes: [u8; 6]) -> Mac {
        bytes[0] = (bytes[0] & !0x01) | 0x02;
        Mac(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Mac> {
        Some(Mac(bytes.try_into().ok()?))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl FromStr for Mac {
    type Err = String;

    /// Six hex octets separated by ':' (either case), as results carry them.
    fn from_str(s: &str) -> Result<Mac, String> {
        let bad = || format!("{s:?} is not a MAC address (aa:bb:cc:dd:ee:ff)");
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let part = parts.next().ok_or_else(bad)?;
            if part.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_bytes_become_local_unicast() {
        for first in [0x00, 0x01, 0xff, 0xfe, 0x03] {
            let mac = Mac::from_random([first, 1, 2, 3, 4, 5]);
            assert_eq!(mac.0[0] & 0x01, 0, "unicast: {mac}");
            assert_eq!(mac.0[0] & 0x02, 0x02, "locally administered: {mac}");
            // The other bits stay random.
            assert_eq!(mac.0[0] & 0xfc, first & 0xfc);
            assert_eq!(mac.0[1..], [1, 2, 3, 4, 5]);
        }
    }

    #[test]
    fn random_gives_different_local_addresses() {
        let a = Mac::random().unwrap();
        let b = Mac::random().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.0[0] & 0x03, 0x02);
    }

    #[test]
    fn text_round_trip() {
        let mac = Mac([0x02, 0xab, 0x00, 0x10, 0xff, 0x7e]);
        assert_eq!(mac.to_string(), "02:ab:00:10:ff:7e");
        assert_eq!("02:AB:00:10:ff:7e".parse::<Mac>().unwrap(), mac);
        for bad in [
            "",
            "02:ab:00:10:ff",
            "02:ab:00:10:ff:7e:01",
            "2:ab:00:10:ff:7e",
            "zz:ab:00:10:ff:7e",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad:?}");
        }
    }
}

//! Key and value of the `metrics` map: packets and bytes the tc programs
//! forwarded or dropped, by reason and direction, per CPU.

use core::mem::size_of;

/// `dir` of a [`MetricsKey`].
pub const METRIC_INGRESS: u8 = 1;
pub const METRIC_EGRESS: u8 = 2;
pub const METRIC_SERVICE: u8 = 3;

/// `reason` 0: forwarded. Any other value is a drop code (`DROP_*`).
pub const REASON_FORWARDED: u8 = 0;

/// Drop codes, stored positive, with the numbers Cilium users grep for.
pub const DROP_INVALID_SIP: u8 = 132;
pub const DROP_POLICY: u8 = 133;
pub const DROP_INVALID: u8 = 134;
pub const DROP_CT_INVALID_HDR: u8 = 135;
pub const DROP_CT_UNKNOWN_PROTO: u8 = 137;
pub const DROP_UNKNOWN_L3: u8 = 139;
pub const DROP_WRITE_ERROR: u8 = 141;
pub const DROP_UNKNOWN_L4: u8 = 142;
pub const DROP_UNROUTABLE: u8 = 151;
pub const DROP_CSUM_L3: u8 = 153;
pub const DROP_CSUM_L4: u8 = 154;
pub const DROP_CT_CREATE_FAILED: u8 = 155;
pub const DROP_FRAG_NOSUPPORT: u8 = 157;
pub const DROP_NO_SERVICE: u8 = 158;
pub const DROP_UNSUPP_SERVICE_PROTO: u8 = 159;
pub const DROP_NO_TUNNEL_ENDPOINT: u8 = 160;
pub const DROP_UNSUPPORTED_L2: u8 = 166;
pub const DROP_NO_FIB: u8 = 169;
pub const DROP_TTL_EXCEEDED: u8 = 196;
pub const DROP_HOST_NOT_READY: u8 = 202;
pub const DROP_EP_NOT_READY: u8 = 203;

/// A reason code's name, for the metrics listing the tc work adds.
pub const fn reason_name(reason: u8) -> &'static str {
    match reason {
        REASON_FORWARDED => "Forwarded",
        DROP_INVALID_SIP => "Invalid source ip",
        DROP_POLICY => "Policy denied",
        DROP_INVALID => "Invalid packet",
        DROP_CT_INVALID_HDR => "CT: Invalid header",
        DROP_CT_UNKNOWN_PROTO => "CT: Unknown L4 protocol",
        DROP_UNKNOWN_L3 => "Unknown L3 target address",
        DROP_WRITE_ERROR => "Failed to write packet",
        DROP_UNKNOWN_L4 => "Unknown L4 protocol",
        DROP_UNROUTABLE => "Unroutable",
        DROP_CSUM_L3 => "Invalid L3 checksum",
        DROP_CSUM_L4 => "Invalid L4 checksum",
        DROP_CT_CREATE_FAILED => "CT: Create failed",
        DROP_FRAG_NOSUPPORT => "Fragmentation needed",
        DROP_NO_SERVICE => "Service backend not found",
        DROP_UNSUPP_SERVICE_PROTO => "Unsupported protocol for service",
        DROP_NO_TUNNEL_ENDPOINT => "No tunnel endpoint",
        DROP_UNSUPPORTED_L2 => "Unsupported L2 protocol",
        DROP_NO_FIB => "No FIB entry",
        DROP_TTL_EXCEEDED => "TTL exceeded",
        DROP_HOST_NOT_READY => "Host datapath not ready",
        DROP_EP_NOT_READY => "Endpoint policy program not available",
        _ => "Unknown reason",
    }
}

/// Key of `metrics`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash, PartialOrd, Ord)]
pub struct MetricsKey {
    /// [`REASON_FORWARDED`] or a drop code.
    pub reason: u8,
    /// `METRIC_*`.
    pub dir: u8,
    /// Source line of the drop, for the curious; 0 when not recorded.
    pub line: u16,
    pub file: u8,
    pub reserved: [u8; 3],
}

/// Value of `metrics` (per CPU: a reader sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct MetricsValue {
    pub count: u64,
    pub bytes: u64,
}

const _: () = assert!(size_of::<MetricsKey>() == 8);
const _: () = assert!(size_of::<MetricsValue>() == 16);

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: repr(C), Copy, explicit padding: every byte pattern is a valid
    // value and no byte is uninitialised.
    unsafe impl aya::Pod for MetricsKey {}
    unsafe impl aya::Pod for MetricsValue {}
}

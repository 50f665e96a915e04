//! The service set every arm of the bench programs: one measured Service (the
//! target, backed by real pods) and N background Services with 3 endpoints each
//! at addresses nothing listens on (they only make the tables big).

use std::net::Ipv4Addr;

pub const TARGET_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
pub const TARGET_PORT: u16 = 80;
pub const POD_PORT: u16 = 8080;

#[derive(Clone)]
pub struct Svc {
    /// "namespace/name:port", as kube-proxy names a service port.
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

pub fn target(pods: &[Ipv4Addr]) -> Svc {
    Svc {
        name: "default/target:http".into(),
        vip: TARGET_VIP,
        port: TARGET_PORT,
        endpoints: pods.iter().map(|ip| (*ip, POD_PORT)).collect(),
    }
}

/// Background Service `i`: VIP 10.100.0.0 + i (inside the blackholed service
/// range), endpoints in 10.128.0.0/10.
pub fn background(i: u32) -> Svc {
    let ep = |k: u32| {
        (
            Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + 3 * i + k),
            POD_PORT,
        )
    };
    Svc {
        name: format!("bench/svc-{i}:http"),
        vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 100, 0, 0)) + i),
        port: 80,
        endpoints: vec![ep(0), ep(1), ep(2)],
    }
}

/// The target sits in the middle of the background services: in kube-proxy's
/// linear KUBE-SERVICES chain that is the average case.
pub fn all(n: u32, target: Svc) -> Vec<Svc> {
    let mut v: Vec<Svc> = (0..n).map(background).collect();
    v.insert((n / 2) as usize, target);
    v
}

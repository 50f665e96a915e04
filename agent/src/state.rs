//! What the running agent tells the CLI through --state-dir: its pid, the
//! outcome of its last reconcile and its IPAM use. The maps themselves are the datapath's state;
//! this is only the agent's.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AgentStatus {
    pub pid: u32,
    pub bpf_root: PathBuf,
    pub cgroup: PathBuf,
    pub manifests: PathBuf,
    /// Seconds since the epoch of the last finished reconcile.
    pub last_sync_unix: f64,
    /// How many reconciles have run since start.
    pub syncs: u64,
    /// The map owner's own time for the last reconcile (map writes).
    pub last_sync_ms: f64,
    /// From the file event to the maps holding the change: read, translate,
    /// queue and write.
    #[serde(default)]
    pub last_event_ms: f64,
    pub services: usize,
    pub backends: usize,
    /// Manifest and programming errors of the last reconcile.
    pub errors: Vec<String>,
    /// Fields of Services that lash does not act on, one line per Service and
    /// field. Absent from files of agents that predate it.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Services labelled `service.kubernetes.io/service-proxy-name`: another
    /// proxy's, neither programmed nor warned about.
    #[serde(default)]
    pub other_proxy: Vec<String>,
    /// Pod addresses, when the agent runs with --pod-cidr.
    #[serde(default)]
    pub ipam: Option<crate::ipam::Usage>,
    /// Endpoints and the lxc program links pinned for them.
    #[serde(default)]
    pub endpoints: Option<crate::endpoints::Summary>,
    /// The Kubernetes API, when the agent watches one.
    #[serde(default)]
    pub kubernetes: Option<ApiHealth>,
    /// Map writes (puts and deletes of service state) since the agent
    /// started: a restart that changed nothing writes nothing.
    #[serde(default)]
    pub map_writes: u64,
}

/// How the agent's view of the Kubernetes API stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApiHealth {
    /// The API server, as the client was configured.
    pub server: String,
    /// Every watched kind has been listed in full once: until then nothing
    /// is removed from the datapath.
    pub synced: bool,
    /// Seconds since the epoch since which the API cannot be reached; None
    /// while it can. The datapath keeps its last programming meanwhile.
    pub down_since_unix: Option<f64>,
    /// The last error talking to the API.
    pub last_error: Option<String>,
    /// Objects known, by resource.
    pub services: usize,
    pub endpoint_slices: usize,
    pub nodes: usize,
    /// This node's name, and its pod range and InternalIP as its Node says.
    pub node_name: String,
    pub node_pod_cidr: Option<String>,
    pub node_ip: Option<String>,
    /// Full lists done (the first, then one per 410 or reconnect that needed it).
    pub lists: u64,
}

pub fn status_path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.json")
}

/// Written to a temporary file and renamed, so a reader never sees half of it.
/// Not synced to disk: it describes a running process and is rewritten on
/// every reconcile and IPAM change, so an fsync would only slow those down.
pub fn write_status(state_dir: &Path, status: &AgentStatus) -> std::io::Result<()> {
    fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(".status.json.tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(status).map_err(std::io::Error::other)?)?;
    drop(f);
    fs::rename(&tmp, status_path(state_dir))
}

pub fn read_status(state_dir: &Path) -> Option<AgentStatus> {
    let text = fs::read_to_string(status_path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    pid != 0 && unsafe { libc::kill(pid as i32, 0) } == 0
}

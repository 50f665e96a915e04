//! The eBPF objects for tests that load programs themselves (BPF_PROG_TEST_RUN)
//! and for the bench's floor program: built from ebpf/ at run time with the
//! same command agent/build.rs uses, into target/ebpf.

#[path = "../../ebpf/cargo_cmd.rs"]
mod cargo_cmd;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};

/// The object of ebpf/'s binary `bin` ("lash", "lash-floor"), built if needed
/// (cargo's cache makes that cheap after the first time).
pub fn object(bin: &str) -> anyhow::Result<Vec<u8>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("ebpf");
    let mut cmd =
        cargo_cmd::command(&root.join("ebpf"), &target_dir, bin).map_err(anyhow::Error::msg)?;
    let status = cmd.status().context("running cargo for ebpf/")?;
    if !status.success() {
        bail!("building ebpf/ failed ({status})");
    }
    let obj = cargo_cmd::object(&target_dir, bin);
    std::fs::read(&obj).with_context(|| format!("reading {}", obj.display()))
}

/// A bpffs directory of the test's own for pinned maps, removed with
/// everything pinned in it on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new(tag: &str) -> anyhow::Result<Self> {
        mount_bpffs()?;
        let path = Path::new("/sys/fs/bpf").join(format!("lash-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(PinDir { path })
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Mounts the bpffs at /sys/fs/bpf if nothing is there yet, as the agent
/// does at start: a fresh machine may have none, and a test that loads
/// programs itself may be the first to need it.
fn mount_bpffs() -> anyhow::Result<()> {
    const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
    let target = std::ffi::CString::new("/sys/fs/bpf").expect("no NUL");
    // SAFETY: statfs fills the struct we own; the path is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(target.as_ptr(), &mut st) } == 0 && st.f_type as i64 == BPF_FS_MAGIC {
        return Ok(());
    }
    let fstype = std::ffi::CString::new("bpf").expect("no NUL");
    // SAFETY: valid C strings; no data argument.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting a bpffs at /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

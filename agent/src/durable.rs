//! Files that must survive a crash or a power cut whole: IPAM's allocations
//! and the endpoint records. A reader sees the old content or the new, never
//! half of either.

use std::{fs, io::Write, path::Path};

/// Replaces `path` with `bytes`: a temporary file in the same directory,
/// synced, renamed over the old one, then the directory synced (so the rename
/// itself is on disk).
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fs::rename(&tmp, path)?;
    fs::File::open(dir).and_then(|d| d.sync_all())
}

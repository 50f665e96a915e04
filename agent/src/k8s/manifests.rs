//! Standalone mode's source of truth: a directory of Kubernetes YAML (or JSON)
//! manifests, multi-document files included.
//!
//! A file that does not parse keeps the objects it last gave: a half-saved edit
//! must not take services down. The error names the file and document.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use serde::Deserialize;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("reading manifest directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Objects read from one file.
#[derive(Clone, Debug, Default)]
pub struct FileObjects {
    pub services: Vec<Service>,
    pub slices: Vec<EndpointSlice>,
}

/// Everything the directory holds now.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub services: Vec<Service>,
    /// The file each of `services` came from, index for index.
    pub service_files: Vec<PathBuf>,
    pub slices: Vec<EndpointSlice>,
    /// "FILE: document N: what is wrong" for every file that did not parse
    /// (its previous objects are in the snapshot instead).
    pub errors: Vec<String>,
}

/// Reads a manifest directory, remembering each file's last good contents.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    last_good: BTreeMap<PathBuf, FileObjects>,
}

impl ManifestDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            last_good: BTreeMap::new(),
        }
    }

    pub fn load(&mut self) -> Result<Snapshot, ManifestError> {
        let read_dir = |source| ManifestError::ReadDir {
            dir: self.dir.clone(),
            source,
        };
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(read_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_manifest(p))
            .collect();
        files.sort();

        let mut snap = Snapshot::default();
        let mut seen = BTreeMap::new();
        for path in files {
            let parsed = fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|text| parse(&text).map_err(|e| format!("{}: {e}", path.display())));
            let objects = match parsed {
                Ok(objs) => {
                    self.last_good.insert(path.clone(), objs.clone());
                    objs
                }
                Err(e) => {
                    let kept = self.last_good.get(&path).cloned().unwrap_or_default();
                    snap.errors.push(format!(
                        "{e} (keeping the {} objects it last gave)",
                        kept.services.len() + kept.slices.len()
                    ));
                    kept
                }
            };
            snap.service_files
                .extend(objects.services.iter().map(|_| path.clone()));
            snap.services.extend(objects.services);
            snap.slices.extend(objects.slices);
            seen.insert(path, ());
        }
        // Deleted files take their objects with them.
        self.last_good.retain(|p, _| seen.contains_key(p));
        Ok(snap)
    }
}

/// YAML and JSON files; editor swap and backup files are not manifests.
fn is_manifest(p: &Path) -> bool {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && p.is_file()
        && matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

#[derive(Deserialize)]
struct TypeMeta {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
}

/// Parses every document of a file. Kinds other than Service and EndpointSlice
/// are skipped (a manifest directory often holds Deployments too). Any error
/// rejects the whole file, so a file is applied all or nothing.
pub fn parse(text: &str) -> Result<FileObjects, String> {
    let mut out = FileObjects::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let n = i + 1;
        let value =
            serde_yaml::Value::deserialize(doc).map_err(|e| format!("document {n}: {e}"))?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        let meta: TypeMeta = serde_yaml::from_value(value.clone())
            .map_err(|e| format!("document {n}: not a Kubernetes object: {e}"))?;
        match (meta.api_version.as_str(), meta.kind.as_str()) {
            ("v1", "Service") => out.services.push(
                serde_yaml::from_value(value)
                    .map_err(|e| format!("document {n} (Service): {e}"))?,
            ),
            ("discovery.k8s.io/v1", "EndpointSlice") => out.slices.push(
                serde_yaml::from_value(value)
                    .map_err(|e| format!("document {n} (EndpointSlice): {e}"))?,
            ),
            ("v1", "List") => {
                return Err(format!(
                    "document {n}: v1 List is not supported; use --- separated documents"
                ))
            }
            (_, "") => return Err(format!("document {n}: no kind")),
            _ => {}
        }
    }
    Ok(out)
}

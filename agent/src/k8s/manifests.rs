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

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str, ip: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  clusterIP: {ip}\n  ports:\n  - port: 80\n"
        )
    }

    fn slice(name: &str, svc: &str) -> String {
        format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}\n  labels:\n    kubernetes.io/service-name: {svc}\naddressType: IPv4\nports:\n- port: 8080\nendpoints:\n- addresses: [10.244.0.1]\n"
        )
    }

    const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
";

    fn names(services: &[Service]) -> Vec<String> {
        services
            .iter()
            .map(|s| s.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    #[test]
    fn multi_document_file_skips_other_kinds_and_empty_documents() {
        let text = format!(
            "---\n{}---\n{DEPLOYMENT}---\n---\n# only a comment\n---\n{}---\n{}---\n",
            service("web", "10.96.0.20"),
            slice("web-1", "web"),
            service("api", "10.96.0.21"),
        );
        let objs = parse(&text).unwrap();
        assert_eq!(names(&objs.services), ["web", "api"]);
        assert_eq!(objs.slices.len(), 1);
        assert_eq!(objs.slices[0].metadata.name.as_deref(), Some("web-1"));
        assert_eq!(objs.slices[0].endpoints.len(), 1);

        assert_eq!(parse("").unwrap().services.len(), 0);
        assert_eq!(parse("---\n---\n").unwrap().services.len(), 0);
        // JSON is YAML.
        let json = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "j"},
                       "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}}"#;
        assert_eq!(names(&parse(json).unwrap().services), ["j"]);
    }

    #[test]
    fn malformed_document_is_named_by_number() {
        // YAML syntax error in the third document.
        let text = format!(
            "{}---\n{DEPLOYMENT}---\nkind: Service\nmetadata: {{name: [unclosed\n---\n{}",
            service("web", "10.96.0.20"),
            service("api", "10.96.0.21"),
        );
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with("document 3"), "{e}");

        // A Service that does not fit the schema.
        let text = format!(
            "{}---\napiVersion: v1\nkind: Service\nmetadata: {{name: x}}\nspec: {{ports: eighty}}\n",
            slice("web-1", "web"),
        );
        let e = parse(&text).unwrap_err();
        assert!(e.starts_with("document 2 (Service)"), "{e}");

        let e = parse(&format!(
            "{}---\nmetadata: {{name: x}}\n",
            service("a", "10.96.0.1")
        ))
        .unwrap_err();
        assert!(e.starts_with("document 2") && e.contains("no kind"), "{e}");

        let e = parse("- just\n- a list\n").unwrap_err();
        assert!(e.starts_with("document 1: not a Kubernetes object"), "{e}");

        let e = parse("apiVersion: v1\nkind: List\nitems: []\n").unwrap_err();
        assert!(e.contains("document 1") && e.contains("List"), "{e}");
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let dir = std::env::temp_dir().join(format!(
                "lash-manifests-{tag}-{}-{nanos}",
                std::process::id()
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }

        fn write(&self, name: &str, text: &str) -> PathBuf {
            let p = self.0.join(name);
            fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn manifest_dir_keeps_last_good_objects_of_a_broken_file() {
        let tmp = TempDir::new("last-good");
        let a = tmp.write(
            "a.yaml",
            &format!(
                "{}---\n{}",
                service("web", "10.96.0.20"),
                slice("web-1", "web")
            ),
        );
        let b = tmp.write("b.yml", &service("api", "10.96.0.21"));
        tmp.write(
            "c.json",
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "json"},
                "spec": {"clusterIP": "10.96.0.22", "ports": [{"port": 80}]}}"#,
        );
        // Not manifests: other extensions, dot-files, editor leftovers, directories.
        tmp.write("notes.txt", &service("txt", "10.96.0.30"));
        tmp.write(".hidden.yaml", &service("hidden", "10.96.0.31"));
        tmp.write(".b.yml.swp", "\0\0 not yaml at all: [");
        tmp.write("b.yml~", &service("backup", "10.96.0.32"));
        tmp.write("README", "# manifests\n");
        fs::create_dir(tmp.0.join("sub.yaml")).unwrap();
        fs::write(
            tmp.0.join("sub.yaml").join("d.yaml"),
            service("nested", "10.96.0.33"),
        )
        .unwrap();

        let mut dir = ManifestDir::new(&tmp.0);
        let snap = dir.load().unwrap();
        assert!(snap.errors.is_empty(), "{:?}", snap.errors);
        assert_eq!(names(&snap.services), ["web", "api", "json"]);
        assert_eq!(snap.service_files[0], a);
        assert_eq!(snap.service_files[1], b);
        assert_eq!(snap.service_files.len(), 3);
        assert_eq!(snap.slices.len(), 1);

        // b.yml is saved half-way: its service stays, and the error says where.
        tmp.write(
            "b.yml",
            "apiVersion: v1\nkind: Service\nmetadata: {name: [api\n",
        );
        let snap = dir.load().unwrap();
        assert_eq!(names(&snap.services), ["web", "api", "json"]);
        assert_eq!(snap.service_files[1], b);
        assert_eq!(snap.errors.len(), 1, "{:?}", snap.errors);
        let e = &snap.errors[0];
        assert!(
            e.starts_with(&format!("{}: document 1", b.display())),
            "{e}"
        );
        assert!(e.contains("keeping the 1 objects"), "{e}");

        // Still broken a second time: still kept.
        let snap = dir.load().unwrap();
        assert_eq!(names(&snap.services), ["web", "api", "json"]);

        // Fixed, with another service.
        tmp.write("b.yml", &service("api2", "10.96.0.23"));
        let snap = dir.load().unwrap();
        assert!(snap.errors.is_empty(), "{:?}", snap.errors);
        assert_eq!(names(&snap.services), ["web", "api2", "json"]);

        // A file that was never good gives nothing.
        let d = tmp.write("d.yaml", "kind: Service\nmetadata: [\n");
        let snap = dir.load().unwrap();
        assert_eq!(names(&snap.services), ["web", "api2", "json"]);
        assert_eq!(snap.errors.len(), 1);
        assert!(snap.errors[0].starts_with(&d.display().to_string()));
        assert!(snap.errors[0].contains("keeping the 0 objects"));
    }

    #[test]
    fn manifest_dir_drops_objects_of_deleted_files() {
        let tmp = TempDir::new("deleted");
        let a = tmp.write(
            "a.yaml",
            &format!(
                "{}---\n{}",
                service("web", "10.96.0.20"),
                slice("web-1", "web")
            ),
        );
        let b = tmp.write("b.yaml", &service("api", "10.96.0.21"));
        let mut dir = ManifestDir::new(&tmp.0);
        assert_eq!(names(&dir.load().unwrap().services), ["web", "api"]);

        fs::remove_file(&a).unwrap();
        let snap = dir.load().unwrap();
        assert_eq!(names(&snap.services), ["api"]);
        assert!(snap.slices.is_empty());
        assert_eq!(snap.service_files, [b.clone()]);

        // Deleted, then back broken: its old objects are forgotten.
        fs::remove_file(&b).unwrap();
        assert!(dir.load().unwrap().services.is_empty());
        tmp.write("b.yaml", "kind: Service\nmetadata: [\n");
        let snap = dir.load().unwrap();
        assert!(snap.services.is_empty());
        assert!(
            snap.errors[0].contains("keeping the 0 objects"),
            "{:?}",
            snap.errors
        );
    }

    #[test]
    fn manifest_dir_that_does_not_exist_is_an_error_naming_it() {
        let tmp = TempDir::new("missing");
        let missing = tmp.0.join("nope");
        let e = ManifestDir::new(&missing).load().unwrap_err();
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }
}

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

use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
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
    /// Nodes, kept in compact form only (standalone clusters name their
    /// nodes here).
    pub nodes: Vec<super::nodes::NodeInfo>,
}

/// Everything the directory holds now (tests look at the directory this way).
#[cfg(test)]
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

/// What a file contributed: the Service of each of its Services and slices
/// (None for a slice that names no Service). Enough to take them out of the
/// index again when the file changes, without keeping the objects twice.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileKeys {
    pub services: Vec<(String, String)>,
    pub slices: Vec<Option<(String, String)>>,
}

impl FileKeys {
    pub fn of(objects: &FileObjects) -> Self {
        FileKeys {
            services: objects
                .services
                .iter()
                .map(super::translate::service_key)
                .collect(),
            slices: objects
                .slices
                .iter()
                .map(super::translate::slice_service)
                .collect(),
        }
    }
}

/// One file's objects before (their keys) and after a refresh.
#[derive(Debug)]
pub struct FileChange {
    pub path: PathBuf,
    pub old: FileKeys,
    pub new: FileObjects,
}

/// What a refresh found: the files whose objects changed, and the errors of
/// every file that does not parse now (changed or not).
#[derive(Debug, Default)]
pub struct Refresh {
    pub changed: Vec<FileChange>,
    pub errors: Vec<String>,
}

/// When a file was last seen as it is: a file whose stamp has not moved is not
/// read again, so a change costs the size of the file that changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
}

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Stamp {
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            ino: meta.ino(),
        }
    }
}

#[derive(Debug)]
struct FileState {
    stamp: Stamp,
    /// What the last good parse of the file contributed (empty if none).
    keys: FileKeys,
    /// Why the file as it is now does not parse.
    error: Option<String>,
}

/// Reads a manifest directory, remembering each file's last good contents.
#[derive(Debug)]
pub struct ManifestDir {
    dir: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
    /// Full objects per file, for `load` (tests only; the agent uses the index).
    #[cfg(test)]
    full: BTreeMap<PathBuf, FileObjects>,
}

impl ManifestDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        ManifestDir {
            dir: dir.into(),
            files: BTreeMap::new(),
            #[cfg(test)]
            full: BTreeMap::new(),
        }
    }

    /// Reads what changed since the last refresh.
    pub fn refresh(&mut self) -> Result<Refresh, ManifestError> {
        let read_dir = |source| ManifestError::ReadDir {
            dir: self.dir.clone(),
            source,
        };
        let mut present: BTreeMap<PathBuf, Stamp> = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(read_dir)? {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            if !is_manifest(&path) {
                continue;
            }
            if let Ok(meta) = fs::metadata(&path) {
                present.insert(path, Stamp::of(&meta));
            }
        }

        let mut out = Refresh::default();
        // Deleted files take their objects with them.
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !present.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            if let Some(st) = self.files.remove(&path) {
                out.changed.push(FileChange {
                    path,
                    old: st.keys,
                    new: FileObjects::default(),
                });
            }
        }
        for (path, stamp) in present {
            if self.files.get(&path).is_some_and(|st| st.stamp == stamp) {
                continue;
            }
            let parsed = fs::read_to_string(&path)
                .map_err(|e| format!("{}: {e}", path.display()))
                .and_then(|text| {
                    parse_file(&path, &text).map_err(|e| format!("{}: {e}", path.display()))
                });
            let st = self.files.entry(path.clone()).or_insert(FileState {
                stamp,
                keys: FileKeys::default(),
                error: None,
            });
            st.stamp = stamp;
            match parsed {
                Ok(objects) => {
                    st.error = None;
                    // Only what names the objects is kept here: the index holds
                    // the objects themselves, once.
                    let old = std::mem::replace(&mut st.keys, FileKeys::of(&objects));
                    out.changed.push(FileChange {
                        path,
                        old,
                        new: objects,
                    });
                }
                Err(e) => st.error = Some(e),
            }
        }
        for st in self.files.values() {
            if let Some(e) = &st.error {
                out.errors.push(format!(
                    "{e} (keeping the {} objects it last gave)",
                    st.keys.services.len() + st.keys.slices.len()
                ));
            }
        }
        Ok(out)
    }

    /// Everything the directory holds now (last good objects of broken files).
    #[cfg(test)]
    pub fn load(&mut self) -> Result<Snapshot, ManifestError> {
        let refresh = self.refresh()?;
        for c in refresh.changed {
            if self.files.contains_key(&c.path) {
                self.full.insert(c.path, c.new);
            } else {
                self.full.remove(&c.path);
            }
        }
        let mut snap = Snapshot {
            errors: refresh.errors,
            ..Default::default()
        };
        for (path, objects) in &self.full {
            snap.service_files
                .extend(objects.services.iter().map(|_| path.clone()));
            snap.services.extend(objects.services.iter().cloned());
            snap.slices.extend(objects.slices.iter().cloned());
        }
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

/// Parses a file by its extension: JSON with serde_json (fast, what
/// `kubectl get -o json` writes), everything else as YAML.
pub fn parse_file(path: &Path, text: &str) -> Result<FileObjects, String> {
    if path.extension().and_then(|e| e.to_str()) == Some("json") {
        parse_json(text)
    } else {
        parse(text)
    }
}

/// Keeps what translation and the index read, drops the rest (most of the
/// status, other annotations and labels, managedFields and the like can be
/// most of an object), and gives back the spare room of vectors: the index
/// holds these for as long as the object exists.
fn trim_service(mut s: Service) -> Service {
    // Of the status only the load balancer's addresses are served.
    s.status = s
        .status
        .take()
        .and_then(|st| st.load_balancer)
        .filter(|lb| lb.ingress.as_ref().is_some_and(|i| !i.is_empty()))
        .map(|lb| k8s_openapi::api::core::v1::ServiceStatus {
            load_balancer: Some(lb),
            conditions: None,
        });
    // The topology annotations ask for zone hints.
    let annotations = s.metadata.annotations.take().and_then(|mut a| {
        a.retain(|k, _| super::translate::TOPOLOGY_ANNOTATIONS.contains(&k.as_str()));
        (!a.is_empty()).then_some(a)
    });
    // The proxy-name label hands a Service to another proxy.
    let labels = s.metadata.labels.take().and_then(|mut l| {
        l.retain(|k, _| k == super::translate::SERVICE_PROXY_NAME_LABEL);
        (!l.is_empty()).then_some(l)
    });
    s.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: s.metadata.name.take(),
        namespace: s.metadata.namespace.take(),
        annotations,
        labels,
        ..Default::default()
    };
    s
}

fn trim_slice(mut s: EndpointSlice) -> EndpointSlice {
    s.metadata = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: s.metadata.name.take(),
        namespace: s.metadata.namespace.take(),
        labels: s.metadata.labels.take().map(|mut l| {
            l.retain(|k, _| k == super::translate::SERVICE_NAME_LABEL);
            l
        }),
        ..Default::default()
    };
    for ep in &mut s.endpoints {
        // nodeName (traffic policies) and zone hints (topology) stay.
        ep.target_ref = None;
        ep.deprecated_topology = None;
        ep.zone = None;
        ep.hostname = None;
        ep.addresses.shrink_to_fit();
    }
    s.endpoints.shrink_to_fit();
    if let Some(p) = s.ports.as_mut() {
        p.shrink_to_fit();
    }
    s
}

/// A decoded document, YAML or JSON.
trait Doc: Sized {
    fn str_field(&self, key: &str) -> Option<String>;
    fn into_items(self) -> Option<Vec<Self>>;
    fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, String>;
}

impl Doc for serde_yaml::Value {
    fn str_field(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|x| x.as_str()).map(str::to_string)
    }
    fn into_items(self) -> Option<Vec<Self>> {
        match self {
            serde_yaml::Value::Mapping(mut m) => match m.remove("items") {
                Some(serde_yaml::Value::Sequence(items)) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }
    fn decode<T: serde::de::DeserializeOwned>(self) -> Result<T, String> {
        serde_yaml::from_value(self).map_err(|e| e.to_string())
    }
}

/// Sorts one decoded object into `out` by apiVersion and kind. Kinds other
/// than Service, EndpointSlice and Node are skipped (a manifest directory often holds
/// Deployments too); a `v1` List contributes its items.
fn add_object<V: Doc>(out: &mut FileObjects, value: V, what: &str) -> Result<(), String> {
    let api = value.str_field("apiVersion").unwrap_or_default();
    let kind = value.str_field("kind").unwrap_or_default();
    match (api.as_str(), kind.as_str()) {
        ("v1", "Service") => out.services.push(trim_service(
            value
                .decode()
                .map_err(|e| format!("{what} (Service): {e}"))?,
        )),
        ("discovery.k8s.io/v1", "EndpointSlice") => out.slices.push(trim_slice(
            value
                .decode()
                .map_err(|e| format!("{what} (EndpointSlice): {e}"))?,
        )),
        ("v1", "Node") => out.nodes.push(super::nodes::NodeInfo::of(
            &value
                .decode::<Node>()
                .map_err(|e| format!("{what} (Node): {e}"))?,
        )),
        (_, "List") => {
            let list = value
                .into_items()
                .ok_or_else(|| format!("{what}: a List without items"))?;
            for (i, item) in list.into_iter().enumerate() {
                add_object(out, item, &format!("{what} item {}", i + 1))?;
            }
        }
        (_, "") => return Err(format!("{what}: not a Kubernetes object (no kind)")),
        _ => {}
    }
    Ok(())
}

/// Parses every document of a YAML file. Any error rejects the whole file, so
/// a file is applied all or nothing.
pub fn parse(text: &str) -> Result<FileObjects, String> {
    let mut out = FileObjects::default();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let what = format!("document {}", i + 1);
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| format!("{what}: {e}"))?;
        if value.is_null() {
            continue; // empty document, e.g. a trailing `---`
        }
        if !value.is_mapping() {
            return Err(format!("{what}: not a Kubernetes object (not a mapping)"));
        }
        add_object(&mut out, value, &what)?;
    }
    Ok(out)
}

/// The fields that say what a JSON object is. Items of a List stay raw text,
/// so a big List is decoded item by item into typed objects without building
/// a tree of the whole file first.
#[derive(Deserialize)]
struct JsonHead<'a> {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default, borrow)]
    items: Option<Vec<&'a serde_json::value::RawValue>>,
}

fn add_json(out: &mut FileObjects, text: &str, what: &str) -> Result<(), String> {
    let head: JsonHead = serde_json::from_str(text).map_err(|e| format!("{what}: {e}"))?;
    match (head.api_version.as_str(), head.kind.as_str()) {
        ("v1", "Service") => out.services.push(trim_service(
            serde_json::from_str(text).map_err(|e| format!("{what} (Service): {e}"))?,
        )),
        ("discovery.k8s.io/v1", "EndpointSlice") => out.slices.push(trim_slice(
            serde_json::from_str(text).map_err(|e| format!("{what} (EndpointSlice): {e}"))?,
        )),
        ("v1", "Node") => out.nodes.push(super::nodes::NodeInfo::of(
            &serde_json::from_str::<Node>(text).map_err(|e| format!("{what} (Node): {e}"))?,
        )),
        (_, "List") => {
            let items = head
                .items
                .ok_or_else(|| format!("{what}: a List without items"))?;
            for (i, raw) in items.iter().enumerate() {
                add_json(out, raw.get(), &format!("{what} item {}", i + 1))?;
            }
        }
        (_, "") => return Err(format!("{what}: not a Kubernetes object (no kind)")),
        _ => {}
    }
    Ok(())
}

/// Parses a JSON file: one object, or a List of them.
pub fn parse_json(text: &str) -> Result<FileObjects, String> {
    let mut out = FileObjects::default();
    if !text.trim_start().starts_with('{') {
        return Err("document 1: not a Kubernetes object (not an object)".into());
    }
    add_json(&mut out, text, "document 1")?;
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
    fn nodes_are_read_in_compact_form_from_yaml_and_json() {
        let yaml = "apiVersion: v1\nkind: Node\nmetadata: {name: node-2}\nspec: {podCIDRs: [10.244.2.0/24]}\nstatus: {addresses: [{type: InternalIP, address: 192.168.50.12}]}\n";
        let n = &parse(yaml).unwrap().nodes[0];
        assert_eq!(n.name, "node-2");
        assert_eq!(n.internal_ip, Some("192.168.50.12".parse().unwrap()));
        assert_eq!(n.ipv4_pod_cidr(), Some("10.244.2.0/24"));
        let json = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n"},"spec":{"podCIDR":"10.244.3.0/24"}}"#;
        assert_eq!(
            parse_json(json).unwrap().nodes[0].pod_cidrs,
            ["10.244.3.0/24"]
        );
        let e = parse("apiVersion: v1\nkind: Node\nmetadata: {name: x}\nspec: {podCIDRs: 7}\n")
            .unwrap_err();
        assert!(e.contains("(Node)"), "{e}");
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

        let e = parse("apiVersion: v1\nkind: List\n").unwrap_err();
        assert!(e.contains("document 1") && e.contains("List"), "{e}");
    }

    /// `kubectl get svc,endpointslices -o yaml|json` writes a v1 List.
    #[test]
    fn lists_contribute_their_items_in_yaml_and_json() {
        let yaml = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n  spec: {clusterIP: 10.96.0.1, ports: [{port: 80}]}\n- apiVersion: apps/v1\n  kind: Deployment\n  metadata: {name: d}\n";
        let objs = parse(yaml).unwrap();
        assert_eq!(names(&objs.services), ["a"]);
        let json = r#"{"apiVersion":"v1","kind":"List","items":[
            {"apiVersion":"v1","kind":"Service","metadata":{"name":"b"},"spec":{"clusterIP":"10.96.0.2","ports":[{"port":53,"protocol":"UDP"}]}},
            {"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSlice","metadata":{"name":"b-1","labels":{"kubernetes.io/service-name":"b"}},"addressType":"IPv4","endpoints":[]}]}"#;
        let objs = parse_file(Path::new("x.json"), json).unwrap();
        assert_eq!(names(&objs.services), ["b"]);
        assert_eq!(objs.slices.len(), 1);
        let e = parse_file(Path::new("x.json"), r#"{"kind":"List","items":[{"kind":"Service","apiVersion":"v1","spec":{"ports":"x"}}]}"#).unwrap_err();
        assert!(e.starts_with("document 1 item 1 (Service)"), "{e}");
    }

    #[test]
    fn refresh_reads_only_changed_files() {
        let dir = TempDir::new("refresh");
        dir.write("a.yaml", &service("a", "10.96.0.1"));
        dir.write("b.yaml", &service("b", "10.96.0.2"));
        let mut md = ManifestDir::new(&dir.0);
        let r = md.refresh().unwrap();
        assert_eq!(r.changed.len(), 2);
        assert!(md.refresh().unwrap().changed.is_empty(), "nothing changed");
        dir.write("b.yaml", &service("b", "10.96.0.3"));
        let r = md.refresh().unwrap();
        assert_eq!(r.changed.len(), 1);
        assert!(r.changed[0].path.ends_with("b.yaml"));
        assert_eq!(
            r.changed[0].old.services,
            [("default".to_string(), "b".to_string())]
        );
        std::fs::remove_file(dir.0.join("a.yaml")).unwrap();
        let r = md.refresh().unwrap();
        assert_eq!(r.changed.len(), 1);
        assert!(r.changed[0].new.services.is_empty() && r.changed[0].old.services.len() == 1);
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

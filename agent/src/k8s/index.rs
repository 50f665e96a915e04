//! The Services and EndpointSlices known now, indexed so that a change to a
//! few objects is translated and turned into frontend changes in time
//! proportional to the change, not to the cluster.
//!
//! Two Services may claim the same frontend (a copy-paste ClusterIP): the one
//! whose name sorts first owns it, as in a full reconcile, and the other gets an
//! error until the clash is gone.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use super::{
    ignored::{ignored_fields, Ignored},
    manifests::FileChange,
    node_context::NodeContext,
    translate::{
        join, other_proxy, service_frontends, service_key, slice_facts, slice_service,
        ServiceFrontends, SliceFacts,
    },
};
use crate::model::{Change, DesiredService, L4Addr};

type SvcKey = (String, String);

/// A few entries kept sorted in a Vec. Most Services live in one file, have one
/// slice and one claimant per frontend; a BTreeMap would allocate room for
/// eleven entries each time (about 9 KiB for one Service object).
#[derive(Debug)]
struct SmallMap<K, V>(Vec<(K, V)>);

impl<K, V> Default for SmallMap<K, V> {
    fn default() -> Self {
        SmallMap(Vec::new())
    }
}

impl<K: Ord, V> SmallMap<K, V> {
    fn insert(&mut self, k: K, v: V) {
        match self.0.binary_search_by(|(x, _)| x.cmp(&k)) {
            Ok(i) => self.0[i].1 = v,
            Err(i) => {
                // Vec's first growth makes room for four; one is the usual case.
                self.0.reserve_exact(1);
                self.0.insert(i, (k, v))
            }
        }
    }
    fn remove(&mut self, k: &K) -> Option<V> {
        let i = self.0.binary_search_by(|(x, _)| x.cmp(k)).ok()?;
        Some(self.0.remove(i).1)
    }
    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }
    fn keys(&self) -> impl Iterator<Item = &K> {
        self.0.iter().map(|(k, _)| k)
    }
    fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What the index keeps of one Service object: its frontends as its spec
/// gives them (or why it cannot be served), the fields it sets that lash
/// does not act on, and the proxy it belongs to if not us.
#[derive(Debug)]
struct ServiceSpec {
    frontends: Result<ServiceFrontends, String>,
    ignored: Ignored,
    other_proxy: Option<String>,
}

#[derive(Debug, Default)]
pub struct ServiceIndex {
    /// The node translation runs for (its name, zone and node-port
    /// addresses).
    node: NodeContext,
    /// Each Service's spec in compact form, by key; the same Service in two
    /// files is kept per file and the first file wins. Compact forms, not the
    /// objects: the index lives as long as the agent and holds the whole
    /// cluster.
    services: BTreeMap<SvcKey, SmallMap<PathBuf, ServiceSpec>>,
    /// Slices by the Service they serve, keyed by (file, position in file).
    slices: BTreeMap<SvcKey, SmallMap<(PathBuf, usize), SliceFacts>>,
    /// The frontends each Service translated to last time it translated.
    translated: BTreeMap<SvcKey, Vec<DesiredService>>,
    /// Why a Service is not (or no longer) translated as it is written.
    errors: BTreeMap<SvcKey, String>,
    /// The ignored fields of the Services that set any, so `warnings` need
    /// not walk every Service.
    ignored: BTreeMap<SvcKey, Ignored>,
    /// frontend -> (DesiredService name -> Service) of everyone claiming it.
    claims: BTreeMap<L4Addr, SmallMap<String, SvcKey>>,
    /// Frontends with more than one claimant, so `errors` need not scan claims.
    clashes: BTreeSet<L4Addr>,
    /// Services labelled for another proxy, and which.
    other_proxy: BTreeMap<SvcKey, String>,
}

impl ServiceIndex {
    /// An empty index translating for `node`.
    pub fn new(node: NodeContext) -> Self {
        ServiceIndex {
            node,
            ..Default::default()
        }
    }

    /// Takes in changed files; returns the frontend changes they cause.
    pub fn apply_files(&mut self, changes: Vec<FileChange>) -> Vec<Change> {
        let mut affected: BTreeSet<SvcKey> = BTreeSet::new();
        for c in changes {
            for key in c.old.services {
                if let Some(by_file) = self.services.get_mut(&key) {
                    by_file.remove(&c.path);
                    if by_file.is_empty() {
                        self.services.remove(&key);
                    }
                }
                affected.insert(key);
            }
            for (i, key) in c.old.slices.into_iter().enumerate() {
                if let Some(key) = key {
                    if let Some(m) = self.slices.get_mut(&key) {
                        m.remove(&(c.path.clone(), i));
                        if m.is_empty() {
                            self.slices.remove(&key);
                        }
                    }
                    affected.insert(key);
                }
            }
            for svc in c.new.services {
                let key = service_key(&svc);
                self.services.entry(key.clone()).or_default().insert(
                    c.path.clone(),
                    ServiceSpec {
                        frontends: service_frontends(&self.node, &svc),
                        ignored: ignored_fields(&self.node, &svc),
                        other_proxy: other_proxy(&svc).map(str::to_string),
                    },
                );
                affected.insert(key);
            }
            for (i, slice) in c.new.slices.into_iter().enumerate() {
                if let Some(key) = slice_service(&slice) {
                    self.slices
                        .entry(key.clone())
                        .or_default()
                        .insert((c.path.clone(), i), slice_facts(&self.node, &slice));
                    affected.insert(key);
                }
            }
        }

        let mut touched: BTreeSet<L4Addr> = BTreeSet::new();
        for key in affected {
            let old = self.translated.remove(&key).unwrap_or_default();
            let new = self.translate(&key, &old);
            for d in &old {
                touched.insert(d.frontend);
                if let Some(c) = self.claims.get_mut(&d.frontend) {
                    c.remove(&d.name);
                    if c.is_empty() {
                        self.claims.remove(&d.frontend);
                    }
                }
            }
            for d in &new {
                touched.insert(d.frontend);
                self.claims
                    .entry(d.frontend)
                    .or_default()
                    .insert(d.name.clone(), key.clone());
            }
            if !new.is_empty() {
                self.translated.insert(key, new);
            }
        }
        for fe in &touched {
            if self.claims.get(fe).is_some_and(|c| c.len() > 1) {
                self.clashes.insert(*fe);
            } else {
                self.clashes.remove(fe);
            }
        }
        touched
            .into_iter()
            .map(|fe| match self.owner_desired(&fe) {
                Some(d) => Change::Upsert(d.clone()),
                None => Change::Remove(fe),
            })
            .collect()
    }

    /// The Service's frontends as written now, or its last good ones (with an
    /// error recorded) when it does not translate.
    fn translate(&mut self, key: &SvcKey, old: &[DesiredService]) -> Vec<DesiredService> {
        let Some(by_file) = self.services.get(key) else {
            self.errors.remove(key);
            self.ignored.remove(key);
            self.other_proxy.remove(key);
            return Vec::new();
        };
        let mut files = by_file.iter();
        let (path, spec) = files.next().expect("entries are removed when empty");
        match &spec.other_proxy {
            Some(p) => self.other_proxy.insert(key.clone(), p.clone()),
            None => self.other_proxy.remove(key),
        };
        // Warnings hold whether or not the spec translates: the fields are
        // ignored either way.
        if spec.ignored.is_empty() {
            self.ignored.remove(key);
        } else {
            self.ignored.insert(key.clone(), spec.ignored);
        }
        let slices: Vec<&SliceFacts> = self
            .slices
            .get(key)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        let dup = files
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>();
        match spec
            .frontends
            .as_ref()
            .map(|f| join(f, &slices))
            .map_err(Clone::clone)
        {
            Ok(v) => {
                if dup.is_empty() {
                    self.errors.remove(key);
                } else {
                    self.errors.insert(
                        key.clone(),
                        format!(
                            "Service {}/{} is defined in {} and again in {}; using the first",
                            key.0,
                            key.1,
                            path.display(),
                            dup.join(", ")
                        ),
                    );
                }
                v
            }
            Err(e) => {
                self.errors.insert(
                    key.clone(),
                    format!(
                        "{}: Service {}/{}: {e}; {}",
                        path.display(),
                        key.0,
                        key.1,
                        if old.is_empty() {
                            "not programmed"
                        } else {
                            "keeping its previous programming"
                        }
                    ),
                );
                old.to_vec()
            }
        }
    }

    fn owner_desired(&self, fe: &L4Addr) -> Option<&DesiredService> {
        let (name, key) = self.claims.get(fe)?.iter().next()?;
        self.translated
            .get(key)?
            .iter()
            .find(|d| d.frontend == *fe && d.name == *name)
    }

    /// Every frontend wanted now, for a full reconcile.
    pub fn desired(&self) -> Vec<DesiredService> {
        self.translated.values().flatten().cloned().collect()
    }

    /// Fields Services set that lash does not act on, one line per Service
    /// and field, sorted. Not errors: the rest of each Service is programmed.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .ignored
            .iter()
            .flat_map(|((ns, name), ignored)| ignored.warnings(ns, name))
            .collect();
        out.sort();
        out
    }

    /// Services left to another proxy (labelled
    /// `service.kubernetes.io/service-proxy-name`), one line each, sorted:
    /// neither programmed nor warned about.
    pub fn other_proxy(&self) -> Vec<String> {
        self.other_proxy
            .iter()
            .map(|((ns, name), proxy)| format!("Service {ns}/{name}: for another proxy ({proxy})"))
            .collect()
    }

    /// Translation errors and frontend clashes, one line each.
    pub fn errors(&self) -> Vec<String> {
        let mut out: Vec<String> = self.errors.values().cloned().collect();
        for (fe, claimants) in self
            .clashes
            .iter()
            .filter_map(|fe| Some((fe, self.claims.get(fe)?)))
        {
            if claimants.len() > 1 {
                let mut names = claimants.keys();
                let owner = names.next().expect("len > 1");
                for other in names {
                    out.push(format!(
                        "service {other}: frontend {fe} is already taken by {owner}; ignored"
                    ));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::{
        k8s::{
            manifests::{parse, FileObjects},
            translate::translate,
        },
        model::{BackendState, Proto},
    };
    use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

    /// A Service; ports are (name, port, protocol), an empty name for none.
    fn service(ns: &str, name: &str, ip: &str, ports: &[(&str, u32, &str)]) -> String {
        let mut y = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  clusterIP: {ip}\n  ports:\n"
        );
        for (n, p, proto) in ports {
            if n.is_empty() {
                y += &format!("  - {{port: {p}, protocol: {proto}}}\n");
            } else {
                y += &format!("  - {{name: {n}, port: {p}, protocol: {proto}}}\n");
            }
        }
        y
    }

    /// An EndpointSlice of `svc`; endpoints are (ip, ready): a not-ready one
    /// is serving and terminating.
    fn slice(
        ns: &str,
        name: &str,
        svc: &str,
        ports: &[(&str, u16, &str)],
        endpoints: &[(&str, bool)],
    ) -> String {
        let mut y = format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
             metadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{kubernetes.io/service-name: {svc}}}\n\
             addressType: IPv4\n"
        );
        y += if ports.is_empty() {
            "ports: []\n"
        } else {
            "ports:\n"
        };
        for (n, p, proto) in ports {
            y += &format!("- {{name: '{n}', port: {p}, protocol: {proto}}}\n");
        }
        y += if endpoints.is_empty() {
            "endpoints: []\n"
        } else {
            "endpoints:\n"
        };
        for (ip, ready) in endpoints {
            let c = if *ready {
                "{ready: true, serving: true, terminating: false}"
            } else {
                "{ready: false, serving: true, terminating: true}"
            };
            y += &format!("- addresses: [{ip}]\n  conditions: {c}\n");
        }
        y
    }

    fn docs(parts: &[String]) -> String {
        parts.join("---\n")
    }

    fn web() -> String {
        service(
            "shop",
            "web",
            "10.96.0.20",
            &[("http", 80, "TCP"), ("metrics", 9090, "TCP")],
        )
    }

    fn web_slice(endpoints: &[(&str, bool)]) -> String {
        slice(
            "shop",
            "web-1",
            "web",
            &[("http", 8080, "TCP"), ("metrics", 9091, "TCP")],
            endpoints,
        )
    }

    fn fe(s: &str) -> L4Addr {
        addr(s, Proto::Tcp)
    }

    fn addr(s: &str, proto: Proto) -> L4Addr {
        let (ip, port) = s.split_once(':').unwrap();
        L4Addr {
            ip: ip.parse::<Ipv4Addr>().unwrap(),
            port: port.parse().unwrap(),
            proto,
        }
    }

    fn active(addrs: &[&str]) -> Vec<(L4Addr, BackendState)> {
        addrs
            .iter()
            .map(|a| (fe(a), BackendState::Active))
            .collect()
    }

    /// A manifest directory as `ManifestDir::refresh` reports it: each write
    /// is a FileChange from what the file held before.
    #[derive(Default)]
    struct Dir {
        files: BTreeMap<PathBuf, FileObjects>,
        index: ServiceIndex,
    }

    impl Dir {
        /// Writes (Some) or deletes (None) files, as one refresh.
        fn change(&mut self, files: &[(&str, Option<&str>)]) -> Vec<Change> {
            let changes = files
                .iter()
                .map(|(path, text)| {
                    let path = PathBuf::from(path);
                    let new = match text {
                        Some(t) => parse(t).expect("test YAML parses"),
                        None => FileObjects::default(),
                    };
                    let old = match text {
                        Some(_) => self.files.insert(path.clone(), new.clone()),
                        None => self.files.remove(&path),
                    }
                    .unwrap_or_default();
                    FileChange {
                        path,
                        old: crate::k8s::manifests::FileKeys::of(&old),
                        new,
                    }
                })
                .collect();
            self.index.apply_files(changes)
        }

        fn write(&mut self, path: &str, text: &str) -> Vec<Change> {
            self.change(&[(path, Some(text))])
        }

        fn delete(&mut self, path: &str) -> Vec<Change> {
            self.change(&[(path, None)])
        }

        /// Every object, files in path order, as a full translate reads them.
        fn translate_all(&self) -> Vec<DesiredService> {
            let services: Vec<Service> = self
                .files
                .values()
                .flat_map(|f| f.services.iter().cloned())
                .collect();
            let slices: Vec<EndpointSlice> = self
                .files
                .values()
                .flat_map(|f| f.slices.iter().cloned())
                .collect();
            translate(&services, &slices)
                .into_iter()
                .flat_map(|t| t.result.unwrap_or_else(|e| panic!("{}: {e}", t.service)))
                .collect()
        }
    }

    fn upserts(changes: &[Change]) -> BTreeMap<L4Addr, DesiredService> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Upsert(d) => Some((d.frontend, d.clone())),
                Change::Remove(_) => None,
            })
            .collect()
    }

    fn removes(changes: &[Change]) -> Vec<L4Addr> {
        changes
            .iter()
            .filter_map(|c| match c {
                Change::Remove(fe) => Some(*fe),
                Change::Upsert(_) => None,
            })
            .collect()
    }

    /// The frontends `changes` touch, each once.
    #[track_caller]
    fn frontends(changes: &[Change]) -> Vec<L4Addr> {
        let v: Vec<L4Addr> = changes
            .iter()
            .map(|c| match c {
                Change::Upsert(d) => d.frontend,
                Change::Remove(fe) => *fe,
            })
            .collect();
        let set: BTreeSet<L4Addr> = v.iter().copied().collect();
        assert_eq!(set.len(), v.len(), "a frontend twice in {changes:#?}");
        v
    }

    fn sorted(mut v: Vec<DesiredService>) -> Vec<DesiredService> {
        v.sort_by(|a, b| {
            (&a.name, a.frontend)
                .cmp(&(&b.name, b.frontend))
                .then_with(|| a.backends.cmp(&b.backends))
        });
        v
    }

    #[track_caller]
    fn assert_errors_mention(errors: &[String], needles: &[&str]) {
        assert!(
            errors.iter().any(|e| needles.iter().all(|n| e.contains(n))),
            "no error mentions all of {needles:?}; errors: {errors:#?}"
        );
    }

    #[test]
    fn new_file_yields_an_upsert_per_frontend() {
        let mut dir = Dir::default();
        let c = dir.write(
            "/m/web.yaml",
            &docs(&[
                web(),
                web_slice(&[("10.244.0.1", true), ("10.244.0.2", true)]),
            ]),
        );
        assert_eq!(frontends(&c).len(), 2);
        assert!(removes(&c).is_empty());
        let u = upserts(&c);
        let http = &u[&fe("10.96.0.20:80")];
        assert_eq!(http.name, "shop/web:http");
        assert_eq!(
            http.backends,
            active(&["10.244.0.1:8080", "10.244.0.2:8080"])
        );
        let metrics = &u[&fe("10.96.0.20:9090")];
        assert_eq!(metrics.name, "shop/web:metrics");
        assert_eq!(
            metrics.backends,
            active(&["10.244.0.1:9091", "10.244.0.2:9091"])
        );
        assert!(dir.index.errors().is_empty(), "{:?}", dir.index.errors());
        assert_eq!(sorted(dir.index.desired()), sorted(dir.translate_all()));

        // Writing the same again changes nothing the datapath sees: at most
        // the same upserts.
        let c = dir.write(
            "/m/web.yaml",
            &docs(&[
                web(),
                web_slice(&[("10.244.0.1", true), ("10.244.0.2", true)]),
            ]),
        );
        assert!(removes(&c).is_empty());
        assert_eq!(upserts(&c), u);
    }

    #[test]
    fn slice_change_retranslates_only_its_service() {
        let mut dir = Dir::default();
        let api = service("shop", "api", "10.96.0.21", &[("", 80, "TCP")]);
        let api_slice = slice(
            "shop",
            "api-1",
            "api",
            &[("", 8000, "TCP")],
            &[("10.244.1.1", true)],
        );
        dir.write("/m/services.yaml", &docs(&[web(), api]));
        dir.write(
            "/m/slices.yaml",
            &docs(&[web_slice(&[("10.244.0.1", true)]), api_slice.clone()]),
        );
        let api_fe = fe("10.96.0.21:80");
        let api_before = dir
            .index
            .desired()
            .into_iter()
            .find(|d| d.frontend == api_fe)
            .unwrap();
        assert_eq!(api_before.backends, active(&["10.244.1.1:8000"]));

        // One more web endpoint, in the file that holds api's slice too: api
        // may be translated again (the file changed), but stays as it was.
        let c = dir.write(
            "/m/slices.yaml",
            &docs(&[
                web_slice(&[("10.244.0.1", true), ("10.244.0.3", false)]),
                api_slice.clone(),
            ]),
        );
        assert!(removes(&c).is_empty());
        let u = upserts(&c);
        assert_eq!(
            u[&fe("10.96.0.20:80")].backends,
            active(&["10.244.0.1:8080"]),
            "a terminating endpoint is not used while one is ready"
        );
        assert!(u.get(&api_fe).is_none_or(|d| *d == api_before));

        // A slice in its own file: only web's frontends.
        dir.write("/m/slices.yaml", &api_slice);
        let c = dir.write("/m/web-slice.yaml", &web_slice(&[("10.244.0.9", true)]));
        assert_eq!(
            frontends(&c),
            [fe("10.96.0.20:80"), fe("10.96.0.20:9090")],
            "only web's frontends"
        );
        let u = upserts(&c);
        assert_eq!(
            u[&fe("10.96.0.20:80")].backends,
            active(&["10.244.0.9:8080"])
        );
        assert_eq!(
            u[&fe("10.96.0.20:9090")].backends,
            active(&["10.244.0.9:9091"])
        );
        // The slice goes: web keeps its frontends, without backends.
        let c = dir.delete("/m/web-slice.yaml");
        assert_eq!(frontends(&c), [fe("10.96.0.20:80"), fe("10.96.0.20:9090")]);
        assert!(upserts(&c).values().all(|d| d.backends.is_empty()));
        assert_eq!(sorted(dir.index.desired()), sorted(dir.translate_all()));
    }

    #[test]
    fn deleting_a_file_yields_removes() {
        let mut dir = Dir::default();
        dir.write(
            "/m/web.yaml",
            &docs(&[web(), web_slice(&[("10.244.0.1", true)])]),
        );
        let api = service("shop", "api", "10.96.0.21", &[("", 80, "TCP")]);
        dir.write("/m/api.yaml", &api);
        let c = dir.delete("/m/web.yaml");
        let mut r = removes(&c);
        r.sort();
        assert_eq!(r, [fe("10.96.0.20:80"), fe("10.96.0.20:9090")]);
        assert!(upserts(&c).is_empty());
        assert_eq!(dir.index.desired().len(), 1);
        assert_eq!(dir.index.desired()[0].name, "shop/api");

        // A Service whose file is deleted with its slices elsewhere: removed;
        // back again, it finds its slices.
        dir.write("/m/s.yaml", &web_slice(&[("10.244.0.5", true)]));
        assert!(dir
            .change(&[("/m/s.yaml", Some(&web_slice(&[("10.244.0.5", true)])))])
            .is_empty());
        let c = dir.write("/m/web.yaml", &web());
        assert_eq!(
            upserts(&c)[&fe("10.96.0.20:80")].backends,
            active(&["10.244.0.5:8080"])
        );
        // A Service turned headless goes too.
        let c = dir.write(
            "/m/web.yaml",
            &web().replace("clusterIP: 10.96.0.20", "clusterIP: None"),
        );
        assert_eq!(removes(&c).len(), 2);
        assert!(dir.index.errors().is_empty());
    }

    #[test]
    fn service_that_stops_translating_keeps_its_last_good_frontends() {
        let mut dir = Dir::default();
        dir.write(
            "/m/web.yaml",
            &docs(&[web(), web_slice(&[("10.244.0.1", true)])]),
        );
        let good = sorted(dir.index.desired());

        let broken = web().replace("port: 9090", "port: 70000");
        let c = dir.write(
            "/m/web.yaml",
            &docs(&[broken.clone(), web_slice(&[("10.244.0.1", true)])]),
        );
        assert!(removes(&c).is_empty(), "{c:#?}");
        for d in upserts(&c).values() {
            assert!(good.contains(d), "changed: {d:?}");
        }
        assert_eq!(sorted(dir.index.desired()), good);
        let errors = dir.index.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_errors_mention(
            &errors,
            &[
                "/m/web.yaml",
                "Service shop/web",
                "70000",
                "keeping its previous",
            ],
        );

        // Its slices change meanwhile: still the last good programming.
        let c = dir.write(
            "/m/web.yaml",
            &docs(&[broken.clone(), web_slice(&[("10.244.0.7", true)])]),
        );
        assert!(removes(&c).is_empty());
        assert_eq!(sorted(dir.index.desired()), good);

        // Fixed: the current slices count, and the error is gone.
        let c = dir.write(
            "/m/web.yaml",
            &docs(&[web(), web_slice(&[("10.244.0.7", true)])]),
        );
        assert_eq!(
            upserts(&c)[&fe("10.96.0.20:80")].backends,
            active(&["10.244.0.7:8080"])
        );
        assert!(dir.index.errors().is_empty(), "{:?}", dir.index.errors());

        // Never good: nothing, and an error saying so. Deleted: no error.
        let c = dir.write(
            "/m/bad.yaml",
            &service("ns", "bad", "10.96.0.99", &[("", 70000, "TCP")]),
        );
        assert!(c.is_empty(), "{c:#?}");
        assert_errors_mention(
            &dir.index.errors(),
            &["/m/bad.yaml", "Service ns/bad", "not programmed"],
        );
        dir.delete("/m/bad.yaml");
        assert!(dir.index.errors().is_empty(), "{:?}", dir.index.errors());
    }

    #[test]
    fn clashing_frontend_goes_to_the_first_name_and_passes_on() {
        let mut dir = Dir::default();
        let b = service("default", "b", "10.96.0.5", &[("", 80, "TCP")]);
        let b_slice = slice(
            "default",
            "b-1",
            "b",
            &[("", 8080, "TCP")],
            &[("10.244.0.2", true)],
        );
        let a = service("default", "a", "10.96.0.5", &[("", 80, "TCP")]);
        let a_slice = slice(
            "default",
            "a-1",
            "a",
            &[("", 8080, "TCP")],
            &[("10.244.0.1", true)],
        );
        let f = fe("10.96.0.5:80");

        // b first: it owns the frontend.
        let c = dir.write("/m/b.yaml", &docs(&[b.clone(), b_slice.clone()]));
        assert_eq!(upserts(&c)[&f].name, "default/b");

        // a comes and sorts first: it takes over.
        let c = dir.write("/m/a.yaml", &docs(&[a.clone(), a_slice.clone()]));
        let u = upserts(&c);
        assert_eq!(u[&f].name, "default/a");
        assert_eq!(u[&f].backends, active(&["10.244.0.1:8080"]));
        let errors = dir.index.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(
            errors[0],
            "service default/b: frontend 10.96.0.5:80/TCP is already taken by default/a; ignored"
        );

        // b's endpoints change: a keeps it.
        let c = dir.write(
            "/m/b.yaml",
            &docs(&[
                b.clone(),
                slice(
                    "default",
                    "b-1",
                    "b",
                    &[("", 8080, "TCP")],
                    &[("10.244.0.3", true)],
                ),
            ]),
        );
        for d in upserts(&c).values() {
            assert_eq!(d.name, "default/a");
        }
        assert!(removes(&c).is_empty());

        // a goes: b takes over, with its current backends.
        let c = dir.delete("/m/a.yaml");
        assert!(removes(&c).is_empty(), "{c:#?}");
        let u = upserts(&c);
        assert_eq!(u[&f].name, "default/b");
        assert_eq!(u[&f].backends, active(&["10.244.0.3:8080"]));
        assert!(dir.index.errors().is_empty(), "{:?}", dir.index.errors());

        // Both in one file, b first in the file: a still wins by name; a
        // moving to another ClusterIP hands the frontend to b.
        let mut dir = Dir::default();
        dir.write(
            "/m/x.yaml",
            &docs(&[b.clone(), b_slice.clone(), a.clone(), a_slice.clone()]),
        );
        assert_eq!(dir.index.errors().len(), 1);
        let moved = a.replace("10.96.0.5", "10.96.0.6");
        let c = dir.write("/m/x.yaml", &docs(&[b, b_slice, moved, a_slice]));
        let u = upserts(&c);
        assert_eq!(u[&f].name, "default/b");
        assert_eq!(u[&f].backends, active(&["10.244.0.2:8080"]));
        assert_eq!(u[&fe("10.96.0.6:80")].name, "default/a");
        assert!(dir.index.errors().is_empty());
    }

    #[test]
    fn same_service_in_two_files_is_reported_and_the_first_file_wins() {
        let mut dir = Dir::default();
        dir.write("/m/a.yaml", &web());
        let other = web().replace("10.96.0.20", "10.96.0.30");
        let c = dir.write("/m/b.yaml", &other);
        assert!(
            frontends(&c)
                .iter()
                .all(|f| f.ip == Ipv4Addr::new(10, 96, 0, 20)),
            "{c:#?}"
        );
        let errors = dir.index.errors();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_errors_mention(&errors, &["shop/web", "/m/a.yaml", "/m/b.yaml"]);
        assert!(dir
            .index
            .desired()
            .iter()
            .all(|d| d.frontend.ip == Ipv4Addr::new(10, 96, 0, 20)));

        // The first file goes: the second's version takes over.
        let c = dir.delete("/m/a.yaml");
        let mut r = removes(&c);
        r.sort();
        assert_eq!(r, [fe("10.96.0.20:80"), fe("10.96.0.20:9090")]);
        let u = upserts(&c);
        assert_eq!(u.len(), 2);
        assert!(u.keys().all(|f| f.ip == Ipv4Addr::new(10, 96, 0, 30)));
        assert!(dir.index.errors().is_empty(), "{:?}", dir.index.errors());
    }

    #[test]
    fn warnings_follow_the_service_as_it_is_edited_and_deleted() {
        let mut dir = Dir::default();
        // No nodePort written (standalone allocates none), an IPv6 external IP.
        let sticky = web().replace(
            "  clusterIP: 10.96.0.20\n",
            "  clusterIP: 10.96.0.20\n  externalIPs: ['2001:db8::1']\n  type: NodePort\n",
        );
        dir.write(
            "/m/web.yaml",
            &docs(&[sticky.clone(), web_slice(&[("10.244.0.1", true)])]),
        );
        dir.write(
            "/m/api.yaml",
            &service("shop", "api", "10.96.0.21", &[("", 80, "TCP")]),
        );
        let w = dir.index.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].starts_with("Service shop/web: spec.ipFamilies/clusterIPs/externalIPs: IPv6"),
            "{w:?}"
        );
        assert!(
            w[1].starts_with("Service shop/web: spec.ports[].nodePort is not set"),
            "{w:?}"
        );
        // Warnings are not errors: the Service is programmed as a ClusterIP.
        assert!(dir.index.errors().is_empty());
        assert_eq!(dir.index.desired().len(), 3);
        assert_eq!(sorted(dir.index.desired()), sorted(dir.translate_all()));

        // A second Service with a warning sorts in by name.
        let api = service("shop", "api", "10.96.0.21", &[("", 80, "TCP")]).replace(
            "  clusterIP: 10.96.0.21\n",
            "  clusterIP: 10.96.0.21\n  trafficDistribution: PreferClose\n",
        );
        dir.write("/m/api.yaml", &api);
        let w = dir.index.warnings();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[0].starts_with("Service shop/api: spec.trafficDistribution"),
            "{w:?}"
        );

        // The field is edited away: its warning goes, the other stays.
        let c = dir.write(
            "/m/web.yaml",
            &docs(&[
                sticky.replace("  type: NodePort\n", ""),
                web_slice(&[("10.244.0.1", true)]),
            ]),
        );
        assert!(c.iter().all(|c| matches!(c, Change::Upsert(_))), "{c:#?}");
        let w = dir.index.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w.iter().all(|w| !w.contains("nodePort")), "{w:?}");

        // A spec that no longer translates keeps its warnings with its error.
        dir.write("/m/api.yaml", &api.replace("port: 80", "port: 70000"));
        assert_eq!(dir.index.errors().len(), 1);
        assert_eq!(dir.index.warnings().len(), 2);

        // Deleted Services take their warnings along.
        dir.delete("/m/api.yaml");
        dir.write("/m/web.yaml", &web());
        assert_eq!(dir.index.warnings(), Vec::<String>::new());
        assert!(dir.index.errors().is_empty());
    }

    #[test]
    fn warnings_of_a_service_in_two_files_come_from_the_first() {
        let mut dir = Dir::default();
        let sticky = web().replace(
            "  clusterIP: 10.96.0.20\n",
            "  clusterIP: 10.96.0.20\n  externalIPs: ['2001:db8::1']\n",
        );
        dir.write("/m/b.yaml", &sticky);
        dir.write("/m/a.yaml", &web());
        assert_eq!(dir.index.warnings(), Vec::<String>::new());
        dir.delete("/m/a.yaml");
        assert_eq!(dir.index.warnings().len(), 1);
    }

    /// Item 7 and 8 of issue 8's section 2: a Service labelled for another
    /// proxy is left alone (nothing programmed, no warning, no error) and
    /// listed as such; without the label it is ours again.
    #[test]
    fn another_proxys_service_is_listed_apart_and_left_alone() {
        let mut dir = Dir::default();
        let theirs = web().replace(
            "metadata: {name: web, namespace: shop}",
            "metadata:\n  name: web\n  namespace: shop\n  labels: {service.kubernetes.io/service-proxy-name: other-proxy}",
        );
        assert_ne!(theirs, web(), "the label went in");
        // SCTP and IPv6 would be warnings on one of ours.
        let theirs = theirs.replace(
            "  clusterIP: 10.96.0.20\n",
            "  clusterIP: 10.96.0.20\n  externalIPs: ['2001:db8::1']\n",
        );
        let c = dir.write(
            "/m/web.yaml",
            &docs(&[theirs.clone(), web_slice(&[("10.244.0.1", true)])]),
        );
        assert!(c.is_empty(), "{c:#?}");
        assert!(dir.index.desired().is_empty());
        assert!(dir.index.errors().is_empty());
        assert!(dir.index.warnings().is_empty());
        assert_eq!(
            dir.index.other_proxy(),
            ["Service shop/web: for another proxy (other-proxy)"]
        );
        // The label goes: ours, programmed, and its warning shows.
        let ours = theirs.replace(
            "  labels: {service.kubernetes.io/service-proxy-name: other-proxy}\n",
            "",
        );
        let c = dir.write(
            "/m/web.yaml",
            &docs(&[ours, web_slice(&[("10.244.0.1", true)])]),
        );
        assert_eq!(upserts(&c).len(), 2, "{c:#?}");
        assert!(dir.index.other_proxy().is_empty());
        assert_eq!(dir.index.warnings().len(), 1);
        // Deleted: nothing listed.
        dir.write(
            "/m/web.yaml",
            &docs(&[theirs, web_slice(&[("10.244.0.1", true)])]),
        );
        assert_eq!(dir.index.other_proxy().len(), 1);
        dir.delete("/m/web.yaml");
        assert!(dir.index.other_proxy().is_empty());
    }

    /// Random edits of a few files: after each, `desired()` is what a full
    /// translate of every object gives, and the frontend changes returned so
    /// far add up to what a full reconcile would program (first name wins).
    #[test]
    fn incremental_changes_add_up_to_the_full_translation() {
        let mut seed: u64 = 0x853c_49e6_748f_ea9b;
        let mut rand = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let paths = ["/m/a.yaml", "/m/b.yaml", "/m/c.yaml", "/m/d.yaml"];
        let services = [
            ("default", "s0"),
            ("default", "s1"),
            ("default", "s2"),
            ("other", "s0"),
            ("other", "s3"),
            ("default", "s4"),
        ];
        let ips = ["10.96.0.1", "10.96.0.2", "10.96.0.3"];
        let ports = [
            ("http", 80, "TCP"),
            ("metrics", 9090, "TCP"),
            ("dns", 53, "UDP"),
        ];
        let endpoints = ["10.244.0.1", "10.244.0.2", "10.244.0.3", "10.244.0.4"];

        let mut dir = Dir::default();
        let mut programmed: BTreeMap<L4Addr, DesiredService> = BTreeMap::new();
        let mut clashes = 0;
        for step in 0..400 {
            // Each Service lives in one file (the same Service in two files
            // is reported, not translated twice); slices go anywhere.
            let mut batch: Vec<(&str, Option<String>)> = Vec::new();
            for _ in 0..1 + rand(2) {
                let p = rand(paths.len());
                if rand(8) == 0 {
                    batch.push((paths[p], None));
                    continue;
                }
                let mut objs = Vec::new();
                for (i, (ns, name)) in services.iter().enumerate() {
                    if i % paths.len() == p && rand(4) != 0 {
                        let ps: Vec<(&str, u32, &str)> =
                            ports.iter().copied().filter(|_| rand(2) == 0).collect();
                        let ps = if ps.is_empty() { vec![ports[0]] } else { ps };
                        objs.push(service(ns, name, ips[rand(ips.len())], &ps));
                    }
                }
                for k in 0..rand(4) {
                    let (ns, name) = services[rand(services.len())];
                    let sp: Vec<(&str, u16, &str)> = ports
                        .iter()
                        .filter(|_| rand(3) != 0)
                        .map(|(n, port, proto)| (*n, (*port + 8000) as u16, *proto))
                        .collect();
                    let eps: Vec<(&str, bool)> = (0..rand(3))
                        .map(|_| (endpoints[rand(endpoints.len())], rand(3) != 0))
                        .collect();
                    objs.push(slice(ns, &format!("{name}-{p}-{k}"), name, &sp, &eps));
                }
                batch.push((paths[p], Some(docs(&objs))));
            }
            // One refresh names a file once.
            let mut seen = BTreeSet::new();
            batch.retain(|(p, _)| seen.insert(*p));
            let files: Vec<(&str, Option<&str>)> =
                batch.iter().map(|(p, t)| (*p, t.as_deref())).collect();
            let changes = dir.change(&files);
            frontends(&changes);
            for c in &changes {
                match c {
                    Change::Upsert(d) => programmed.insert(d.frontend, d.clone()),
                    Change::Remove(f) => programmed.remove(f),
                };
            }

            let full = sorted(dir.translate_all());
            assert_eq!(sorted(dir.index.desired()), full, "step {step}");
            // What a full reconcile admits: per frontend, the first by name.
            let mut want: BTreeMap<L4Addr, DesiredService> = BTreeMap::new();
            let mut clash_errors = Vec::new();
            for d in &full {
                if let Some(owner) = want.get(&d.frontend) {
                    clash_errors.push(format!(
                        "service {}: frontend {} is already taken by {}; ignored",
                        d.name, d.frontend, owner.name
                    ));
                } else {
                    want.insert(d.frontend, d.clone());
                }
            }
            assert_eq!(programmed, want, "step {step}: {changes:#?}");
            let mut errors = dir.index.errors();
            errors.sort();
            clash_errors.sort();
            assert_eq!(errors, clash_errors, "step {step}");
            clashes += clash_errors.len();
        }
        assert!(clashes > 50, "the walk had few clashes: {clashes}");
    }
}

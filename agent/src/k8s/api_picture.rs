//! What the API server has told us, turned into the same per-file changes a
//! manifest edit makes, so the [`ServiceIndex`](super::index::ServiceIndex)
//! serves both sources unchanged. Each object is a "file" of its own, named
//! `k8s:<resource>/<namespace>/<name>`.
//!
//! A watcher (re)lists a kind as `Init`, `InitApply`..., `InitDone`. Objects
//! listed are taken in as they come; those known before and missing from the
//! list are deleted only at `InitDone`, when the list is known to be whole.
//! An object whose resourceVersion has not moved since we took it in is not
//! taken in again, so a relist after a 410 or a reconnect costs only what
//! really changed.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    time::SystemTime,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::runtime::watcher::Event;

use super::{
    api_watch::ApiEvent,
    manifests::{FileChange, FileKeys, FileObjects},
};

/// The kinds watched, as indexes into per-kind state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Service = 0,
    Slice = 1,
}

impl Kind {
    pub fn resource(self) -> &'static str {
        match self {
            Kind::Service => "services",
            Kind::Slice => "endpointslices",
        }
    }
}

/// The annotation the EndpointSlice controller stamps with the time of the
/// change (a pod becoming ready, a Service edited) that led to the slice's
/// current contents: where kube-proxy's network-programming latency starts.
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";

/// An object kind the picture takes in.
pub trait Watched: kube::Resource + Sized {
    const KIND: Kind;
    fn into_objects(self) -> FileObjects;
    /// When the change this object carries was triggered, if it says.
    fn trigger_time(&self) -> Option<SystemTime> {
        None
    }
}

impl Watched for Service {
    const KIND: Kind = Kind::Service;
    fn into_objects(self) -> FileObjects {
        FileObjects {
            services: vec![self],
            ..Default::default()
        }
    }
}

impl Watched for EndpointSlice {
    const KIND: Kind = Kind::Slice;
    fn into_objects(self) -> FileObjects {
        FileObjects {
            slices: vec![self],
            ..Default::default()
        }
    }
    fn trigger_time(&self) -> Option<SystemTime> {
        let text = self
            .metadata
            .annotations
            .as_ref()?
            .get(TRIGGER_TIME_ANNOTATION)?;
        let t = k8s_openapi::chrono::DateTime::parse_from_rfc3339(text).ok()?;
        Some(SystemTime::from(t))
    }
}

/// What we keep of an object taken in: enough to take it out again.
#[derive(Debug)]
struct Known {
    kind: Kind,
    resource_version: Option<String>,
    keys: FileKeys,
}

#[derive(Debug, Default)]
pub struct ApiPicture {
    known: HashMap<PathBuf, Known>,
    /// Per kind, the objects seen by a list under way.
    relisting: [Option<HashSet<PathBuf>>; 2],
    /// Per kind, whether a first list has completed.
    listed: [bool; 2],
    /// Trigger times of the changes taken in since the last `take_triggers`.
    triggers: Vec<SystemTime>,
    /// Objects known, per kind (kept, not counted: status asks after every
    /// batch of events, and a count would walk the whole cluster each time).
    counts: [usize; 2],
}

fn path_of<K: Watched>(obj: &K) -> PathBuf {
    let meta = obj.meta();
    PathBuf::from(format!(
        "k8s:{}/{}/{}",
        K::KIND.resource(),
        meta.namespace.as_deref().unwrap_or("default"),
        meta.name.as_deref().unwrap_or("")
    ))
}

impl ApiPicture {
    /// Every kind has been listed in full at least once: only now may a full
    /// reconcile (which removes what is not desired) run.
    pub fn synced(&self) -> bool {
        self.listed.iter().all(|l| *l)
    }

    /// A list of some kind is under way: the picture is not whole until it ends.
    pub fn relisting(&self) -> bool {
        self.relisting.iter().any(Option::is_some)
    }

    /// The trigger times of the changes taken in since the last call.
    pub fn take_triggers(&mut self) -> Vec<SystemTime> {
        std::mem::take(&mut self.triggers)
    }

    /// How many objects of each kind are known.
    pub fn count(&self, kind: Kind) -> usize {
        self.counts[kind as usize]
    }

    /// Takes in one event of the merged watches: the file changes it makes.
    /// Nodes are not the picture's: the caller hands them to its NodeIndex.
    pub fn take(&mut self, ev: ApiEvent) -> Vec<FileChange> {
        match ev {
            ApiEvent::Service(e) => self.event(e),
            ApiEvent::Slice(e) => self.event(e),
            ApiEvent::Node(_) | ApiEvent::Error(..) | ApiEvent::Expired(_) => Vec::new(),
        }
    }

    /// Takes in one watcher event; returns the file changes it makes.
    pub fn event<K: Watched>(&mut self, ev: Event<K>) -> Vec<FileChange> {
        let kind = K::KIND as usize;
        match ev {
            Event::Init => {
                self.relisting[kind] = Some(HashSet::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                let path = path_of(&obj);
                if let Some(seen) = self.relisting[kind].as_mut() {
                    seen.insert(path.clone());
                }
                self.upsert(path, obj).into_iter().collect()
            }
            Event::Apply(obj) => self.upsert(path_of(&obj), obj).into_iter().collect(),
            Event::Delete(obj) => self.remove(&path_of(&obj)).into_iter().collect(),
            Event::InitDone => {
                self.listed[kind] = true;
                let Some(seen) = self.relisting[kind].take() else {
                    return Vec::new();
                };
                let gone: Vec<PathBuf> = self
                    .known
                    .iter()
                    .filter(|(p, k)| k.kind == K::KIND && !seen.contains(*p))
                    .map(|(p, _)| p.clone())
                    .collect();
                gone.iter().filter_map(|p| self.remove(p)).collect()
            }
        }
    }

    fn upsert<K: Watched>(&mut self, path: PathBuf, obj: K) -> Option<FileChange> {
        let rv = obj.meta().resource_version.clone();
        if let Some(k) = self.known.get(&path) {
            if rv.is_some() && k.resource_version == rv {
                return None;
            }
        }
        // Only a live change counts: a relist replaying an old trigger time
        // would measure the outage, not the programming.
        if self.listed[K::KIND as usize] && self.relisting[K::KIND as usize].is_none() {
            self.triggers.extend(obj.trigger_time());
        }
        let new = obj.into_objects();
        let keys = FileKeys::of(&new);
        let old = self
            .known
            .insert(
                path.clone(),
                Known {
                    kind: K::KIND,
                    resource_version: rv,
                    keys,
                },
            )
            .map(|k| k.keys);
        if old.is_none() {
            self.counts[K::KIND as usize] += 1;
        }
        Some(FileChange {
            path,
            old: old.unwrap_or_default(),
            new,
        })
    }

    fn remove(&mut self, path: &PathBuf) -> Option<FileChange> {
        let old = self.known.remove(path)?;
        self.counts[old.kind as usize] -= 1;
        Some(FileChange {
            path: path.clone(),
            old: old.keys,
            new: FileObjects::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn svc(name: &str, rv: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                resource_version: Some(rv.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn paths(changes: &[FileChange]) -> Vec<String> {
        changes
            .iter()
            .map(|c| c.path.display().to_string())
            .collect()
    }

    #[test]
    fn not_synced_until_every_kind_is_listed() {
        let mut p = ApiPicture::default();
        p.event::<Service>(Event::Init);
        p.event(Event::InitApply(svc("a", "1")));
        p.event::<Service>(Event::InitDone);
        assert!(!p.synced(), "slices not listed yet");
        p.event::<EndpointSlice>(Event::Init);
        assert!(p.relisting());
        p.event::<EndpointSlice>(Event::InitDone);
        assert!(p.synced() && !p.relisting());
    }

    #[test]
    fn a_relist_removes_only_what_is_gone_and_skips_what_did_not_move() {
        let mut p = ApiPicture::default();
        p.event::<Service>(Event::Init);
        for (n, rv) in [("a", "1"), ("b", "2"), ("c", "3")] {
            p.event(Event::InitApply(svc(n, rv)));
        }
        p.event::<Service>(Event::InitDone);

        // After a 410: a is as it was, b moved, c is gone, d is new.
        assert!(p.event::<Service>(Event::Init).is_empty());
        assert!(p.event(Event::InitApply(svc("a", "1"))).is_empty());
        assert_eq!(
            paths(&p.event(Event::InitApply(svc("b", "7")))),
            ["k8s:services/default/b"]
        );
        let d = p.event(Event::InitApply(svc("d", "8")));
        assert_eq!(paths(&d), ["k8s:services/default/d"]);
        assert!(d[0].old.services.is_empty(), "new to us");
        // Nothing is removed before the list is whole.
        assert_eq!(p.count(Kind::Service), 4);
        let done = p.event::<Service>(Event::InitDone);
        assert_eq!(paths(&done), ["k8s:services/default/c"]);
        assert_eq!(done[0].old.services, [("default".into(), "c".into())]);
        assert!(done[0].new.services.is_empty());
        assert_eq!(p.count(Kind::Service), 3);
    }

    #[test]
    fn apply_and_delete_carry_the_old_keys() {
        let mut p = ApiPicture::default();
        assert_eq!(p.event(Event::Apply(svc("a", "1"))).len(), 1);
        let again = p.event(Event::Apply(svc("a", "2")));
        assert_eq!(again[0].old.services, [("default".into(), "a".into())]);
        let del = p.event(Event::Delete(svc("a", "3")));
        assert_eq!(del[0].old.services, [("default".into(), "a".into())]);
        assert!(del[0].new.services.is_empty());
        // A delete of something never seen changes nothing.
        assert!(p.event(Event::Delete(svc("z", "4"))).is_empty());
    }
}

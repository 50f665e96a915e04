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

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::{
    manifests::FileChange,
    translate::{service_key, slice_service, translate_one},
};
use crate::lb::{reconcile::Change, DesiredService, L4Addr};

type SvcKey = (String, String);

#[derive(Debug, Default)]
pub struct ServiceIndex {
    /// Service objects by key; the same Service in two files is kept per file
    /// and the first file wins.
    services: BTreeMap<SvcKey, BTreeMap<PathBuf, Service>>,
    /// Slices by the Service they serve, keyed by (file, position in file).
    slices: BTreeMap<SvcKey, BTreeMap<(PathBuf, usize), EndpointSlice>>,
    /// The frontends each Service translated to last time it translated.
    translated: BTreeMap<SvcKey, Vec<DesiredService>>,
    /// Why a Service is not (or no longer) translated as it is written.
    errors: BTreeMap<SvcKey, String>,
    /// frontend -> (DesiredService name -> Service) of everyone claiming it.
    claims: BTreeMap<L4Addr, BTreeMap<String, SvcKey>>,
}

impl ServiceIndex {
    /// Takes in changed files; returns the frontend changes they cause.
    pub fn apply_files(&mut self, changes: Vec<FileChange>) -> Vec<Change> {
        let mut affected: BTreeSet<SvcKey> = BTreeSet::new();
        for c in changes {
            for svc in &c.old.services {
                let key = service_key(svc);
                if let Some(by_file) = self.services.get_mut(&key) {
                    by_file.remove(&c.path);
                    if by_file.is_empty() {
                        self.services.remove(&key);
                    }
                }
                affected.insert(key);
            }
            for (i, slice) in c.old.slices.iter().enumerate() {
                if let Some(key) = slice_service(slice) {
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
                self.services
                    .entry(key.clone())
                    .or_default()
                    .insert(c.path.clone(), svc);
                affected.insert(key);
            }
            for (i, slice) in c.new.slices.into_iter().enumerate() {
                if let Some(key) = slice_service(&slice) {
                    self.slices
                        .entry(key.clone())
                        .or_default()
                        .insert((c.path.clone(), i), slice);
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
            return Vec::new();
        };
        let mut files = by_file.iter();
        let (path, svc) = files.next().expect("entries are removed when empty");
        let slices: Vec<&EndpointSlice> = self
            .slices
            .get(key)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        let dup = files
            .map(|(p, _)| p.display().to_string())
            .collect::<Vec<_>>();
        match translate_one(svc, &slices) {
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

    /// Translation errors and frontend clashes, one line each.
    pub fn errors(&self) -> Vec<String> {
        let mut out: Vec<String> = self.errors.values().cloned().collect();
        for (fe, claimants) in &self.claims {
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

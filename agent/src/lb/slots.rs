//! Which backend goes into which slot when a service's backends change.

use std::collections::BTreeSet;

/// Slot contents for a service whose backends become `new`, starting from `old`:
/// a backend that stays keeps its slot, newcomers fill the holes first, and the
/// last slots move into holes that remain, so the result is exactly `new`
/// (deduplicated) in 1..=len. Keeping slots stable keeps the maps' churn (and
/// the window in which a connect() sees a mix) as small as the change.
pub fn assign_slots(old: &[u32], new: &[u32]) -> Vec<u32> {
    let mut seen = BTreeSet::new();
    let new: Vec<u32> = new.iter().copied().filter(|id| seen.insert(*id)).collect();
    let wanted: BTreeSet<u32> = new.iter().copied().collect();
    let mut placed = BTreeSet::new();
    let mut slots: Vec<Option<u32>> = old
        .iter()
        .map(|id| (wanted.contains(id) && placed.insert(*id)).then_some(*id))
        .collect();
    let mut newcomers = new.iter().copied().filter(|id| !placed.contains(id));
    for s in slots.iter_mut().filter(|s| s.is_none()) {
        match newcomers.next() {
            Some(id) => *s = Some(id),
            None => break,
        }
    }
    slots.extend(newcomers.map(Some));
    // Fill remaining holes from the tail.
    let mut i = 0;
    while i < slots.len() {
        if slots[i].is_none() {
            match slots.pop() {
                Some(Some(last)) => slots[i] = Some(last),
                Some(None) => continue,
                None => break,
            }
        }
        i += 1;
    }
    slots.into_iter().flatten().collect()
}

//! The driver's results, kept by object sequence number in pages: a program may hold a
//! million refs, and a hash map of them costs twice the slots (its load factor) and, while
//! it grows, both its old and new tables at once.

use std::collections::{HashMap, VecDeque};

use sunray_proto::{object_id, ObjectId};

const PAGE: usize = 4096;

struct Page<T> {
    slots: Vec<Option<T>>,
    used: usize,
}

/// A map from this client's object ids to `T`, in pages of 4,096 consecutive sequence
/// numbers; a page is freed once its last entry goes. Ids of other clients (rare) go to
/// a hash map.
pub struct Results<T> {
    client: u32,
    /// Page number of `pages[0]`.
    first: u64,
    pages: VecDeque<Option<Page<T>>>,
    /// An emptied page kept for the next one: a loop of `get(f.remote())` fills and
    /// empties one page over and over, and must not allocate 160 KiB per round trip.
    spare: Option<Page<T>>,
    foreign: HashMap<ObjectId, T>,
    len: usize,
}

impl<T> Results<T> {
    pub fn new(client: u32) -> Self {
        Results {
            client,
            first: 0,
            pages: VecDeque::new(),
            spare: None,
            foreign: HashMap::new(),
            len: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// (page number, slot) of an id of this client.
    fn place(&self, id: ObjectId) -> Option<(u64, usize)> {
        let seq = id ^ object_id(self.client, 0);
        (seq < 1 << 40).then(|| (seq / PAGE as u64, (seq % PAGE as u64) as usize))
    }

    pub fn insert(&mut self, id: ObjectId, v: T) {
        let Some((page, slot)) = self.place(id) else {
            if self.foreign.insert(id, v).is_none() {
                self.len += 1;
            }
            return;
        };
        if self.pages.is_empty() {
            self.first = page;
        }
        while page < self.first {
            self.pages.push_front(None);
            self.first -= 1;
        }
        let i = (page - self.first) as usize;
        while self.pages.len() <= i {
            self.pages.push_back(None);
        }
        if self.pages[i].is_none() {
            self.pages[i] = Some(self.spare.take().unwrap_or_else(|| Page {
                slots: (0..PAGE).map(|_| None).collect(),
                used: 0,
            }));
        }
        let p = self.pages[i].as_mut().expect("set above");
        if p.slots[slot].replace(v).is_none() {
            p.used += 1;
            self.len += 1;
        }
    }

    pub fn get(&self, id: &ObjectId) -> Option<&T> {
        match self.place(*id) {
            None => self.foreign.get(id),
            Some((page, slot)) => {
                let i = page.checked_sub(self.first)? as usize;
                self.pages.get(i)?.as_ref()?.slots[slot].as_ref()
            }
        }
    }

    pub fn contains_key(&self, id: &ObjectId) -> bool {
        self.get(id).is_some()
    }

    pub fn remove(&mut self, id: &ObjectId) -> Option<T> {
        let Some((page, slot)) = self.place(*id) else {
            let v = self.foreign.remove(id);
            self.len -= v.is_some() as usize;
            return v;
        };
        let i = page.checked_sub(self.first)? as usize;
        let p = self.pages.get_mut(i)?.as_mut()?;
        let v = p.slots[slot].take()?;
        p.used -= 1;
        self.len -= 1;
        if p.used == 0 {
            if let Some(empty) = self.pages[i].take() {
                self.spare.get_or_insert(empty);
            }
            while matches!(self.pages.front(), Some(None)) {
                self.pages.pop_front();
                self.first += 1;
            }
            while matches!(self.pages.back(), Some(None)) {
                self.pages.pop_back();
            }
        }
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn behaves_as_a_map_under_generated_operations_and_frees_empty_pages() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut r = Results::new(5);
        let mut model = HashMap::new();
        for step in 0..200_000u64 {
            let id = match rng.random_range(0..20) {
                0 => object_id(6, rng.random_range(0..100)), // another client's
                _ => object_id(5, rng.random_range(0..40_000)),
            };
            match rng.random_range(0..3) {
                0 | 1 => {
                    r.insert(id, step);
                    model.insert(id, step);
                }
                _ => assert_eq!(r.remove(&id), model.remove(&id)),
            }
            assert_eq!(r.get(&id), model.get(&id));
            assert_eq!(r.len(), model.len());
        }
        let ids: Vec<_> = model.keys().copied().collect();
        for id in ids {
            assert_eq!(r.remove(&id), model.remove(&id));
        }
        assert!(r.is_empty() && r.pages.is_empty() && r.foreign.is_empty());
    }
}

//! What the box has already said or done, in fixed memory (`heapless`): a ring
//! of 64-bit tags of keys, the oldest forgotten first, so months of uptime and
//! thousands of patients never grow it. Forgetting a key costs a look at the
//! disk, never a repeated action: each user keeps the lasting memory on disk
//! (a state record, a quarantine's reason.txt) and asks it on a miss.

use super::quarantine::fnv1a;

pub(crate) struct Recent<const N: usize> {
    tags: heapless::HistoryBuf<u64, N>,
}

impl<const N: usize> Default for Recent<N> {
    fn default() -> Self {
        Recent {
            tags: heapless::HistoryBuf::new(),
        }
    }
}

impl<const N: usize> Recent<N> {
    pub fn contains(&self, key: &str) -> bool {
        self.tags.as_slice().contains(&fnv1a(key))
    }

    /// Remembers `key` (forgetting the oldest when full); false when it was
    /// remembered already.
    pub fn insert(&mut self, key: &str) -> bool {
        if self.contains(key) {
            return false;
        }
        self.tags.write(fnv1a(key));
        true
    }

    /// How many keys it holds (the tests' view: it never exceeds N).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.tags.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_newest_in_fixed_memory() {
        let mut r = Recent::<4>::default();
        assert!(r.insert("a") && !r.insert("a"));
        for k in ["b", "c", "d", "e"] {
            assert!(r.insert(k));
        }
        assert_eq!(r.len(), 4);
        assert!(!r.contains("a"), "the oldest is forgotten first");
        assert!(r.contains("b") && r.contains("e"));
        for i in 0..100_000 {
            r.insert(&format!("cycle {i}"));
        }
        assert_eq!(r.len(), 4);
        assert!(r.contains("cycle 99999"));
    }
}

//! Lists in place of the standard sort and of small B-tree maps, for the binary's size.
//!
//! `slice::sort_by` is generic: each element type sorted gets its own few-KiB copy of the
//! merge sort. Here only the permutation of indices is sorted (one copy, behind a `&dyn`
//! comparator); each element type adds just the moves. Likewise each key/value type of a
//! `BTreeMap` compiles its own copy of the B-tree's insert, search and drop code; a map of a
//! few dozen entries that is only grouped into and read is a list of pairs (`entry`).

use std::cmp::Ordering;

/// Sorts `items` stably by `compare`, as `slice::sort_by` does.
pub fn sort_by<T>(items: &mut Vec<T>, compare: impl Fn(&T, &T) -> Ordering) {
    if items.len() < 2 {
        return;
    }
    let order = sorted_indices(items.len(), &|a, b| compare(&items[a], &items[b]));
    let mut slots: Vec<Option<T>> = items.drain(..).map(Some).collect();
    items.extend(order.into_iter().filter_map(|i| slots[i].take()));
}

/// `0..len` sorted stably by `compare` of the elements at those indices.
#[inline(never)]
fn sorted_indices(len: usize, compare: &dyn Fn(usize, usize) -> Ordering) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    order.sort_by(|a, b| compare(*a, *b));
    order
}

/// The value of `key` in a list of pairs, added with its default at the end when missing (as
/// `BTreeMap::entry(key).or_default()`, in first-seen order).
pub fn entry<'a, V: Default>(pairs: &'a mut Vec<(String, V)>, key: &str) -> &'a mut V {
    let index = match pairs.iter().position(|(k, _)| k == key) {
        Some(index) => index,
        None => {
            pairs.push((key.to_string(), V::default()));
            pairs.len() - 1
        }
    };
    &mut pairs[index].1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_stably_like_the_standard_sort() {
        let mut items: Vec<(u8, &str)> = vec![(3, "a"), (1, "b"), (3, "c"), (0, "d"), (1, "e")];
        let mut expected = items.clone();
        expected.sort_by_key(|item| item.0);
        sort_by(&mut items, |a, b| a.0.cmp(&b.0));
        assert_eq!(items, expected);
        assert_eq!(
            items,
            vec![(0, "d"), (1, "b"), (1, "e"), (3, "a"), (3, "c")]
        );
    }

    #[test]
    fn entry_groups_by_key_in_first_seen_order() {
        let mut groups: Vec<(String, Vec<u8>)> = Vec::new();
        for (key, value) in [("b", 1), ("a", 2), ("b", 3)] {
            entry(&mut groups, key).push(value);
        }
        assert_eq!(
            groups,
            vec![("b".to_string(), vec![1, 3]), ("a".to_string(), vec![2])]
        );
    }

    #[test]
    fn leaves_short_lists_alone() {
        let mut empty: Vec<u8> = Vec::new();
        sort_by(&mut empty, u8::cmp);
        assert!(empty.is_empty());
        let mut one = vec![7u8];
        sort_by(&mut one, u8::cmp);
        assert_eq!(one, [7]);
    }
}

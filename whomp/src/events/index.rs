//! The event layer's documents in memory: every target, filter and subscription, so that
//! matching an event and signing a delivery never read the disk. Built from the records at
//! start and changed only after a record's change is durable (see [`super::store`]).

use std::collections::BTreeMap;

use super::model::{self, Filter, Subscription, Target};

/// Every document, by id (ULIDs, so by creation).
#[derive(Debug, Default, Clone)]
pub struct Index {
    pub targets: BTreeMap<String, Target>,
    pub filters: BTreeMap<String, Filter>,
    pub subscriptions: BTreeMap<String, Subscription>,
}

impl Index {
    /// The active subscriptions whose filter matches event type `name`, with their targets,
    /// by subscription id; a disabled target's subscriptions get nothing. A target bound twice gets the event twice (two subscriptions).
    pub fn matching(&self, name: &str) -> Vec<(&Subscription, &Target)> {
        self.subscriptions
            .values()
            .filter(|s| s.active)
            .filter(|s| {
                self.filters
                    .get(&s.filter_id)
                    .is_some_and(|f| f.events.iter().any(|p| model::matches(p, name)))
            })
            .filter_map(|s| Some((s, self.targets.get(&s.target_id)?)))
            .filter(|(_, t)| !t.disabled)
            .collect()
    }

    /// The subscriptions that name target or filter `id`.
    pub fn users_of(&self, id: &str) -> Vec<&str> {
        self.subscriptions
            .values()
            .filter(|s| s.target_id == id || s.filter_id == id)
            .map(|s| s.id.as_str())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(filters: &[(&str, &[&str])], subs: &[(&str, &str, bool)], event: &str) -> Vec<String> {
        let mut index = Index::default();
        index.targets.insert(
            "t".into(),
            Target {
                id: "t".into(),
                url: "https://a.example/".into(),
                description: String::new(),
                secrets: vec![],
                ..Default::default()
            },
        );
        for (id, events) in filters {
            index.filters.insert(
                id.to_string(),
                Filter {
                    id: id.to_string(),
                    events: events.iter().map(|e| e.to_string()).collect(),
                    created_at: String::new(),
                    updated_at: String::new(),
                },
            );
        }
        for (id, filter, active) in subs {
            index.subscriptions.insert(
                id.to_string(),
                Subscription {
                    id: id.to_string(),
                    target_id: "t".into(),
                    filter_id: filter.to_string(),
                    active: *active,
                    created_at: String::new(),
                    updated_at: String::new(),
                },
            );
        }
        index
            .matching(event)
            .iter()
            .map(|(s, _)| s.id.clone())
            .collect()
    }

    #[test]
    fn active_subscriptions_whose_filter_matches() {
        let filters: &[(&str, &[&str])] = &[
            ("exact", &["a.b.c"]),
            ("wild", &["a.*"]),
            ("other", &["x.*"]),
        ];
        let subs = [
            ("s1", "exact", true),
            ("s2", "wild", true),
            ("s3", "other", true),
            ("s4", "wild", false),
            ("s5", "gone", true),
        ];
        assert_eq!(check(filters, &subs, "a.b.c"), ["s1", "s2"]);
        assert_eq!(check(filters, &subs, "a.z"), ["s2"]);
        assert_eq!(check(filters, &subs, "a"), Vec::<String>::new());
    }

    #[test]
    fn a_disabled_targets_subscriptions_get_nothing() {
        let filters: &[(&str, &[&str])] = &[("wild", &["a.*"])];
        let mut index = Index::default();
        index.targets.insert(
            "t".into(),
            Target {
                id: "t".into(),
                disabled: true,
                ..Default::default()
            },
        );
        index.filters.insert(
            "wild".into(),
            Filter {
                id: "wild".into(),
                events: vec!["a.*".into()],
                created_at: String::new(),
                updated_at: String::new(),
            },
        );
        index.subscriptions.insert(
            "s".into(),
            Subscription {
                id: "s".into(),
                target_id: "t".into(),
                filter_id: "wild".into(),
                active: true,
                created_at: String::new(),
                updated_at: String::new(),
            },
        );
        assert!(index.matching("a.b").is_empty());
        index.targets.get_mut("t").unwrap().disabled = false;
        assert_eq!(index.matching("a.b").len(), 1);
        assert_eq!(check(filters, &[("s", "wild", true)], "a.b"), ["s"]);
    }
}

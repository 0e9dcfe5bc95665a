//! The backup group an alert is about, read from wherever its sender puts it, so every shape
//! reaches the playbook as the same labels: `datastore`, `backup_type` and `backup_id`.
//!
//! | sender | where the group is |
//! |---|---|
//! | Alertmanager | labels already (`datastore`, `backup_type`, `backup_id`) |
//! | the forwarder | its name, description or worker text: `pbs-datastore:vm/451` |
//! | the sweep | the `group` (`vm/451`) and `datastore` evidence |

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

/// `[datastore:]type/id`, as PBS names a backup worker (`pbs-datastore:vm/451`).
static GROUP: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\b([A-Za-z0-9_-]+):)?\b(vm|ct|host)/([A-Za-z0-9_.-]+)")
        .expect("the group pattern compiles")
});

/// Adds `datastore`, `backup_type` and `backup_id` from the first of `texts` that names a
/// group. Labels the sender set itself are never replaced.
pub(super) fn fill_labels(labels: &mut BTreeMap<String, String>, texts: &[&str]) {
    let Some(found) = texts.iter().find_map(|text| GROUP.captures(text)) else {
        return;
    };
    if let Some(store) = found.get(1) {
        labels
            .entry("datastore".to_owned())
            .or_insert_with(|| store.as_str().to_owned());
    }
    labels
        .entry("backup_type".to_owned())
        .or_insert_with(|| found[2].to_owned());
    labels
        .entry("backup_id".to_owned())
        .or_insert_with(|| found[3].to_owned());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(existing: &[(&str, &str)], texts: &[&str]) -> BTreeMap<String, String> {
        let mut labels = existing
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        fill_labels(&mut labels, texts);
        labels
    }

    #[test]
    fn the_forwarders_name_gives_store_type_and_id() {
        let labels = filled(&[], &["PBS backup failed: pbs-datastore:vm/451"]);
        assert_eq!(labels["datastore"], "pbs-datastore");
        assert_eq!(labels["backup_type"], "vm");
        assert_eq!(labels["backup_id"], "451");
    }

    #[test]
    fn later_texts_are_read_when_earlier_ones_name_no_group() {
        let labels = filled(&[], &["PBS backup failed", "Worker: store2:ct/105"]);
        assert_eq!(labels["datastore"], "store2");
        assert_eq!(labels["backup_id"], "105");
    }

    #[test]
    fn a_bare_group_and_the_senders_own_labels_are_kept() {
        let labels = filled(&[("datastore", "mine"), ("backup_id", "7")], &["vm/451"]);
        assert_eq!(labels["datastore"], "mine");
        assert_eq!(labels["backup_type"], "vm");
        assert_eq!(labels["backup_id"], "7");
    }

    #[test]
    fn text_without_a_group_adds_nothing() {
        assert!(filled(&[], &["disk full on /var", "vmstat/1"]).is_empty());
    }
}

//! Revenue shares of a new model version, derived from its dataset manifest: each contributor
//! in proportion to the training images they gave, with an optional part for the parent
//! version's contributors; always exactly 10,000 basis points.

use std::collections::BTreeMap;
use std::path::Path;

use alloy_primitives::Address;

use super::EconomyError;
use crate::dataset::{Manifest, Split};

/// Basis points that make a whole.
pub const TOTAL_BPS: u64 = 10_000;

/// Splits `total` among `weights` in proportion, by largest remainder (ties to the earlier
/// entry), so the parts add up to `total` exactly.
pub fn apportion(weights: &[(Address, u64)], total: u64) -> Vec<(Address, u64)> {
    let sum: u64 = weights.iter().map(|(_, weight)| weight).sum();
    if sum == 0 {
        return Vec::new();
    }
    let mut parts: Vec<(Address, u64, u64)> = weights
        .iter()
        .map(|(who, weight)| {
            let exact = u128::from(*weight) * u128::from(total);
            (
                *who,
                (exact / u128::from(sum)) as u64,
                (exact % u128::from(sum)) as u64,
            )
        })
        .collect();
    let mut left = total - parts.iter().map(|(_, part, _)| part).sum::<u64>();
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by(|a, b| parts[*b].2.cmp(&parts[*a].2).then(a.cmp(b)));
    for index in order {
        if left == 0 {
            break;
        }
        parts[index].1 += 1;
        left -= 1;
    }
    parts
        .into_iter()
        .map(|(who, part, _)| (who, part))
        .filter(|(_, part)| *part > 0)
        .collect()
}

/// Shares for a version trained on the dataset at `manifest_path`: `TOTAL_BPS - parent_bps`
/// split by the number of training images each contributor gave, `parent_bps` split like the
/// parent version's shares; an address in both gets both.
pub fn shares_from_dataset(
    manifest_path: &Path,
    parent: &[(Address, u16)],
    parent_bps: u16,
) -> Result<Vec<(Address, u16)>, EconomyError> {
    let refuse = |reason: String| EconomyError::NotPublishable {
        asset: manifest_path.display().to_string(),
        reason,
    };
    if u64::from(parent_bps) > TOTAL_BPS {
        return Err(refuse(format!(
            "a parent share of {parent_bps} bps is more than the whole"
        )));
    }
    if parent_bps > 0 && parent.is_empty() {
        return Err(refuse(
            "a parent share needs a parent version with contributors".into(),
        ));
    }
    let manifest = Manifest::load(manifest_path).map_err(|error| refuse(error.to_string()))?;
    let mut counts: BTreeMap<Address, u64> = BTreeMap::new();
    for item in manifest
        .items
        .iter()
        .filter(|item| item.split == Split::Train)
    {
        if let Some(address) = &item.contributor {
            let address: Address = address
                .parse()
                .map_err(|_| refuse(format!("item {}: {address:?} is not an address", item.id)))?;
            *counts.entry(address).or_default() += 1;
        }
    }
    if counts.is_empty() {
        return Err(refuse(
            "the dataset names no contributors: put a contributors.toml in the training folder (see `autonomy train --help`)".into(),
        ));
    }
    let dataset: Vec<(Address, u64)> = counts.into_iter().collect();
    let inherited: Vec<(Address, u64)> = parent
        .iter()
        .map(|(who, bps)| (*who, u64::from(*bps)))
        .collect();
    let mut merged: BTreeMap<Address, u64> = BTreeMap::new();
    for (who, bps) in apportion(&dataset, TOTAL_BPS - u64::from(parent_bps))
        .into_iter()
        .chain(apportion(&inherited, u64::from(parent_bps)))
    {
        *merged.entry(who).or_default() += bps;
    }
    Ok(merged
        .into_iter()
        .map(|(who, bps)| (who, bps as u16))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn who(byte: u8) -> Address {
        Address::repeat_byte(byte)
    }

    #[test]
    fn thirds_still_make_a_whole() {
        let parts = apportion(&[(who(1), 1), (who(2), 1), (who(3), 1)], TOTAL_BPS);
        assert_eq!(
            parts,
            vec![(who(1), 3_334), (who(2), 3_333), (who(3), 3_333)]
        );
    }

    #[test]
    fn dataset_and_parent_shares_combine() {
        let dir = tempfile::tempdir().unwrap();
        let line = |id: &str, contributor: Option<Address>| {
            let mut item = serde_json::json!({"id": id, "caption": "gem", "sha256": "00", "image": "x.png",
                "source": "local", "icon": id, "license": "NOASSERTION", "attribution": "", "split": "train"});
            if let Some(address) = contributor {
                item["contributor"] = serde_json::json!(address.to_string());
            }
            item.to_string()
        };
        let manifest = [
            line("a", Some(who(3))),
            line("b", Some(who(8))),
            line("c", Some(who(8))),
            line("d", None),
        ]
        .join("\n");
        let path = dir.path().join("dataset.jsonl");
        std::fs::write(&path, manifest + "\n").unwrap();
        let shares =
            shares_from_dataset(&path, &[(who(1), 7_000), (who(2), 3_000)], 3_000).unwrap();
        assert_eq!(
            shares,
            vec![
                (who(1), 2_100),
                (who(2), 900),
                (who(3), 2_333),
                (who(8), 4_667)
            ]
        );
        assert!(
            shares_from_dataset(&path, &[], 3_000).is_err(),
            "a parent share needs a parent"
        );
        std::fs::write(&path, line("d", None) + "\n").unwrap();
        let error = shares_from_dataset(&path, &[], 0).unwrap_err().to_string();
        assert!(error.contains("contributors.toml"), "{error}");
    }

    proptest! {
        #[test]
        fn parts_always_sum_to_the_total(weights in prop::collection::vec(1..1_000u64, 1..12), total in 0..20_000u64) {
            let weights: Vec<(Address, u64)> = weights.into_iter().enumerate().map(|(i, w)| (who(i as u8), w)).collect();
            let parts = apportion(&weights, total);
            prop_assert_eq!(parts.iter().map(|(_, p)| p).sum::<u64>(), total);
        }
    }
}

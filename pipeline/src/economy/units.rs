//! Auton amounts as people write them: `12.5` means 12.5 Auton (18 decimals).

use alloy_primitives::U256;
use alloy_primitives::utils::{format_units, parse_units};

/// Parses `"12.5"` into 12.5 × 10¹⁸ units; refuses negatives, more than 18 decimals and junk.
pub fn parse_auton(text: &str) -> Result<U256, String> {
    let trimmed = text
        .trim()
        .trim_end_matches("AUTON")
        .trim_end_matches("auton")
        .trim();
    if trimmed.starts_with('-') {
        return Err(format!("`{text}`: an amount cannot be negative"));
    }
    if trimmed
        .split_once('.')
        .is_some_and(|(_, fraction)| fraction.len() > 18)
    {
        return Err(format!("`{text}`: Auton has 18 decimals, no more"));
    }
    parse_units(trimmed, 18)
        .map(|value| value.get_absolute())
        .map_err(|error| format!("`{text}` is not an amount of Auton ({error})"))
}

/// Formats units as Auton, trailing zeros dropped: `12.5 AUTON`.
pub fn format_auton(amount: U256) -> String {
    let text = format_units(amount, 18).unwrap_or_else(|_| amount.to_string());
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{text} AUTON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn amounts_round_trip_and_junk_is_named() {
        assert_eq!(
            parse_auton("12.5").unwrap(),
            U256::from(12_500_000_000_000_000_000u128)
        );
        assert_eq!(
            parse_auton("1 AUTON").unwrap(),
            U256::from(10u64).pow(U256::from(18))
        );
        assert_eq!(
            format_auton(U256::from(12_500_000_000_000_000_000u128)),
            "12.5 AUTON"
        );
        assert_eq!(format_auton(U256::ZERO), "0 AUTON");
        assert_eq!(format_auton(U256::from(1)), "0.000000000000000001 AUTON");
        assert!(parse_auton("-3").unwrap_err().contains("negative"));
        assert!(parse_auton("3.0000000000000000001").is_err());
        assert!(parse_auton("ten").unwrap_err().contains("`ten`"));
    }

    proptest! {
        #[test]
        fn format_then_parse_is_identity(units in any::<u128>()) {
            let amount = U256::from(units);
            prop_assert_eq!(parse_auton(&format_auton(amount)).unwrap(), amount);
        }
    }
}

//! Validation of decoded messages: the checks every receiver needs and none should write twice.
//!
//! Decoding proves only that bytes have the right shape. These checks prove that the values make
//! sense (finite, non-negative, within bounds, consistent with each other) before any component
//! acts on them. Every failure names the field it found wrong, so the notice sent back to a client
//! tells its author exactly what to fix.

use crate::ids::IdError;
use crate::resources::{Resource, ResourceError, ResourceVector};

/// The largest credit amount (a bid value, a payment, a budget) a message may carry.
pub const MAX_CREDITS: f64 = 1e12;
/// The most bundles one bid may offer.
pub const MAX_BUNDLES: usize = 16;
/// The most workloads one message about a host (forecast, decision) may list.
pub const MAX_WORKLOADS_PER_HOST: usize = 1024;
/// The longest free-text field (reasons, versions, urls), in bytes.
pub const MAX_TEXT_LEN: usize = 1024;

/// Why a decoded message is not acceptable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValidationError {
    #[error("{field}: {source}")]
    Id { field: String, source: IdError },
    #[error("{field}: {source}")]
    Amount { field: String, source: ResourceError },
    #[error("{field} is not a finite number")]
    NotFinite { field: String },
    #[error("{field} is negative ({value})")]
    Negative { field: String, value: f64 },
    #[error("{field} is {value}, above the maximum of {max}")]
    TooLarge { field: String, value: f64, max: f64 },
    #[error("{field} has {count} entries, at most {max} are allowed")]
    TooMany { field: String, count: usize, max: usize },
    #[error("{field} is empty")]
    Empty { field: String },
    #[error("{field}: {reason}")]
    Inconsistent { field: String, reason: String },
}

/// A finite, non-negative number no larger than `max`.
pub fn check_non_negative(field: &str, value: f64, max: f64) -> Result<(), ValidationError> {
    if !value.is_finite() {
        return Err(ValidationError::NotFinite { field: field.to_owned() });
    }
    if value < 0.0 {
        return Err(ValidationError::Negative { field: field.to_owned(), value });
    }
    if value > max {
        return Err(ValidationError::TooLarge { field: field.to_owned(), value, max });
    }
    Ok(())
}

/// An optional [`check_non_negative`].
pub fn check_optional(field: &str, value: Option<f64>, max: f64) -> Result<(), ValidationError> {
    value.map_or(Ok(()), |v| check_non_negative(field, v, max))
}

/// A credit amount: finite, non-negative, at most [`MAX_CREDITS`].
pub fn check_credits(field: &str, value: f64) -> Result<(), ValidationError> {
    check_non_negative(field, value, MAX_CREDITS)
}

/// A collection no longer than `max`.
pub fn check_count(field: &str, count: usize, max: usize) -> Result<(), ValidationError> {
    if count > max {
        return Err(ValidationError::TooMany { field: field.to_owned(), count, max });
    }
    Ok(())
}

/// A free-text field no longer than [`MAX_TEXT_LEN`].
pub fn check_text(field: &str, text: &str) -> Result<(), ValidationError> {
    if text.len() > MAX_TEXT_LEN {
        return Err(ValidationError::TooLarge {
            field: field.to_owned(),
            value: text.len() as f64,
            max: MAX_TEXT_LEN as f64,
        });
    }
    Ok(())
}

/// Every amount of a resource vector within bounds.
pub fn check_resources(field: &str, v: &ResourceVector) -> Result<(), ValidationError> {
    v.validate().map_err(|source| ValidationError::Amount { field: field.to_owned(), source })
}

/// `inner` fits within `outer` on every resource; the error names the first that does not.
pub fn check_fits(
    field: &str,
    inner: &ResourceVector,
    outer_name: &str,
    outer: &ResourceVector,
) -> Result<(), ValidationError> {
    match inner.first_excess_over(outer) {
        None => Ok(()),
        Some(r) => Err(excess(field, r, inner, outer_name, outer)),
    }
}

/// `inner` is at least `floor` on every resource.
pub fn check_at_least(
    field: &str,
    inner: &ResourceVector,
    floor_name: &str,
    floor: &ResourceVector,
) -> Result<(), ValidationError> {
    match floor.first_excess_over(inner) {
        None => Ok(()),
        Some(r) => Err(ValidationError::Inconsistent {
            field: format!("{field}.{r}"),
            reason: format!("{} is below the {floor_name} of {}", inner.get(r), floor.get(r)),
        }),
    }
}

fn excess(
    field: &str,
    r: Resource,
    inner: &ResourceVector,
    outer_name: &str,
    outer: &ResourceVector,
) -> ValidationError {
    ValidationError::Inconsistent {
        field: format!("{field}.{r}"),
        reason: format!("{} exceeds the {outer_name} of {}", inner.get(r), outer.get(r)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_must_be_finite_non_negative_and_bounded() {
        assert!(check_credits("value", 3.5).is_ok());
        assert!(matches!(check_credits("value", f64::NAN), Err(ValidationError::NotFinite { .. })));
        assert!(matches!(check_credits("value", f64::INFINITY), Err(ValidationError::NotFinite { .. })));
        assert!(matches!(check_credits("value", -1.0), Err(ValidationError::Negative { .. })));
        assert!(matches!(check_credits("value", 2e12), Err(ValidationError::TooLarge { .. })));
    }

    #[test]
    fn fit_errors_name_the_resource() {
        let limit = ResourceVector::new(1000, 100, 0, 0);
        let err = check_fits("bundles[0].alloc", &ResourceVector::new(2000, 0, 0, 0), "limit", &limit)
            .unwrap_err();
        assert_eq!(err.to_string(), "bundles[0].alloc.cpu: 2000 exceeds the limit of 1000");
    }
}

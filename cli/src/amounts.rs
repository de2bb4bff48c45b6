//! Resource vectors typed by hand: `cpu=1500,memory=512Mi,net_bw=10M`.
//!
//! `cpu` is in millicores, the others in bytes or bytes per second, as on the wire. Amounts take
//! an optional suffix, binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`, `G`, `T`), so a
//! gigabyte need not be typed as ten digits. Resources left out are zero.

use entente_protocol::{Resource, ResourceVector};

/// Parses `name=amount[,name=amount...]`; an empty string is the zero vector.
pub fn parse_vector(text: &str) -> Result<ResourceVector, String> {
    let mut vector = ResourceVector::ZERO;
    let mut seen = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, amount) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?} is not name=amount (e.g. cpu=1500,memory=512Mi)"))?;
        let resource = Resource::from_name(name.trim()).ok_or_else(|| {
            let names: Vec<_> = Resource::ALL.iter().map(|r| r.name()).collect();
            format!("{name:?} is not a resource (one of {})", names.join(", "))
        })?;
        if seen.contains(&resource) {
            return Err(format!("{name} is given twice"));
        }
        seen.push(resource);
        let amount = parse_amount(amount.trim()).map_err(|e| format!("{name}: {e}"))?;
        vector.set(resource, amount).map_err(|e| e.to_string())?;
    }
    Ok(vector)
}

/// Parses a non-negative integer with an optional unit suffix.
pub fn parse_amount(text: &str) -> Result<u64, String> {
    const SUFFIXES: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    let (digits, scale) = SUFFIXES
        .iter()
        .find_map(|(suffix, scale)| text.strip_suffix(suffix).map(|d| (d, *scale)))
        .unwrap_or((text, 1));
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a whole amount (e.g. 1500, 512Mi, 10M)"))?;
    number.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_parse_with_units() {
        let v = parse_vector("cpu=1500, memory=512Mi,net_bw=10M").unwrap();
        assert_eq!(v, ResourceVector::new(1500, 512 << 20, 0, 10_000_000));
        assert_eq!(parse_vector("").unwrap(), ResourceVector::ZERO);
        assert_eq!(parse_amount("2Gi").unwrap(), 2 << 30);
        assert_eq!(parse_amount("3k").unwrap(), 3000);
    }

    #[test]
    fn bad_vectors_say_what_is_wrong() {
        assert!(parse_vector("cpu").unwrap_err().contains("not name=amount"));
        assert!(parse_vector("gpu=1").unwrap_err().contains("not a resource"));
        assert!(parse_vector("cpu=1,cpu=2").unwrap_err().contains("twice"));
        assert!(parse_vector("cpu=-1").unwrap_err().contains("cpu: \"-1\" is not a whole amount"));
        assert!(parse_vector("memory=1.5Gi").unwrap_err().contains("memory"));
        assert!(parse_amount("99999999999T").unwrap_err().contains("too large"));
    }
}

//! The resource vector every part of entente trades in.
//!
//! A host's capacity, a workload's guarantee and limit, a bundle in a bid and an allocation in a
//! decision are all the same fixed vector of six amounts. Amounts are unsigned integers in the
//! resource's natural unit (millicores, bytes, bytes per second, cache ways), so there is no NaN
//! and no negative amount to guard against, and every amount is capped at [`MAX_AMOUNT`]
//! (2^53): such a value is exact in an `f64` and in a JSON number, and a sum of up to 2^10 of them
//! cannot overflow a `u64`. Arithmetic is checked: an overflow or an underflow is an error the
//! caller must handle, never a silent wrap.
//!
//! `llc` and `mem_bw` exist only on hosts with resctrl; a host without it has capacity 0 for them,
//! and on the wire a message may leave them out (they decode as 0).

use serde::{Deserialize, Serialize};
use std::fmt;

/// The largest amount of any resource a message may carry: 2^53, exact in `f64` and JSON.
pub const MAX_AMOUNT: u64 = 1 << 53;

/// One dimension of the resource vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    /// CPU time, in millicores (1000 = one core for the whole period).
    Cpu,
    /// Memory, in bytes.
    Memory,
    /// Block-device bandwidth, in bytes per second (read + write).
    DiskBw,
    /// Network bandwidth, in bytes per second (receive + transmit).
    NetBw,
    /// Last-level cache, in cache ways (resctrl CAT).
    Llc,
    /// Memory bandwidth, in bytes per second (resctrl MBA).
    MemBw,
}

impl Resource {
    /// Every resource, in the fixed order used by [`ResourceVector::as_array`].
    pub const ALL: [Resource; 6] = [
        Resource::Cpu,
        Resource::Memory,
        Resource::DiskBw,
        Resource::NetBw,
        Resource::Llc,
        Resource::MemBw,
    ];
    /// Number of dimensions.
    pub const COUNT: usize = 6;

    /// The name used on the wire and in files (`cpu`, `memory`, `disk_bw`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::DiskBw => "disk_bw",
            Resource::NetBw => "net_bw",
            Resource::Llc => "llc",
            Resource::MemBw => "mem_bw",
        }
    }

    /// The position of this resource in [`ResourceVector::as_array`].
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses a wire name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Resource> {
        Resource::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an operation on resource amounts failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    #[error("{resource} amount {amount} exceeds the maximum of {MAX_AMOUNT}")]
    TooLarge { resource: Resource, amount: u64 },
    #[error("{resource} would overflow: {left} + {right}")]
    Overflow { resource: Resource, left: u64, right: u64 },
    #[error("{resource} would go negative: {left} - {right}")]
    Underflow { resource: Resource, left: u64, right: u64 },
}

/// Amounts of every resource. See the module documentation for units and bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResourceVector {
    /// Millicores.
    pub cpu: u64,
    /// Bytes.
    pub memory: u64,
    /// Bytes per second.
    pub disk_bw: u64,
    /// Bytes per second.
    pub net_bw: u64,
    /// Cache ways; 0 where the host has no resctrl.
    #[serde(default)]
    pub llc: u64,
    /// Bytes per second; 0 where the host has no resctrl.
    #[serde(default)]
    pub mem_bw: u64,
}

impl ResourceVector {
    /// The zero vector.
    pub const ZERO: ResourceVector = ResourceVector {
        cpu: 0,
        memory: 0,
        disk_bw: 0,
        net_bw: 0,
        llc: 0,
        mem_bw: 0,
    };

    /// A vector with the four always-present resources set and no resctrl resources.
    pub fn new(cpu: u64, memory: u64, disk_bw: u64, net_bw: u64) -> Self {
        ResourceVector { cpu, memory, disk_bw, net_bw, llc: 0, mem_bw: 0 }
    }

    /// Builds a vector from the array order of [`Resource::ALL`].
    #[inline]
    pub fn from_array(a: [u64; Resource::COUNT]) -> Self {
        ResourceVector { cpu: a[0], memory: a[1], disk_bw: a[2], net_bw: a[3], llc: a[4], mem_bw: a[5] }
    }

    /// The amounts in the order of [`Resource::ALL`], for dense numeric code such as the solver.
    #[inline]
    pub fn as_array(&self) -> [u64; Resource::COUNT] {
        [self.cpu, self.memory, self.disk_bw, self.net_bw, self.llc, self.mem_bw]
    }

    /// The amount of one resource.
    #[inline]
    pub fn get(&self, r: Resource) -> u64 {
        self.as_array()[r.index()]
    }

    /// Sets the amount of one resource, checking the bound.
    pub fn set(&mut self, r: Resource, amount: u64) -> Result<(), ResourceError> {
        check_amount(r, amount)?;
        let mut a = self.as_array();
        a[r.index()] = amount;
        *self = Self::from_array(a);
        Ok(())
    }

    /// Returns this vector with one resource replaced, checking the bound.
    pub fn with(mut self, r: Resource, amount: u64) -> Result<Self, ResourceError> {
        self.set(r, amount)?;
        Ok(self)
    }

    /// Every amount is within [`MAX_AMOUNT`].
    #[inline]
    pub fn validate(&self) -> Result<(), ResourceError> {
        for r in Resource::ALL {
            check_amount(r, self.get(r))?;
        }
        Ok(())
    }

    /// Component-wise sum; an error if any component would exceed [`MAX_AMOUNT`].
    pub fn checked_add(&self, other: &ResourceVector) -> Result<ResourceVector, ResourceError> {
        self.zip(other, |r, a, b| {
            let sum = a.checked_add(b).ok_or(ResourceError::Overflow { resource: r, left: a, right: b })?;
            if sum > MAX_AMOUNT {
                return Err(ResourceError::Overflow { resource: r, left: a, right: b });
            }
            Ok(sum)
        })
    }

    /// Component-wise difference; an error if any component would go below zero.
    pub fn checked_sub(&self, other: &ResourceVector) -> Result<ResourceVector, ResourceError> {
        self.zip(other, |r, a, b| {
            a.checked_sub(b).ok_or(ResourceError::Underflow { resource: r, left: a, right: b })
        })
    }

    /// Component-wise difference floored at zero: "how much of `other` is left over", used where
    /// running short is a normal outcome rather than an error.
    #[inline]
    pub fn saturating_sub(&self, other: &ResourceVector) -> ResourceVector {
        let (a, b) = (self.as_array(), other.as_array());
        Self::from_array(std::array::from_fn(|i| a[i].saturating_sub(b[i])))
    }

    /// Component-wise maximum.
    pub fn max(&self, other: &ResourceVector) -> ResourceVector {
        let (a, b) = (self.as_array(), other.as_array());
        Self::from_array(std::array::from_fn(|i| a[i].max(b[i])))
    }

    /// Component-wise minimum.
    pub fn min(&self, other: &ResourceVector) -> ResourceVector {
        let (a, b) = (self.as_array(), other.as_array());
        Self::from_array(std::array::from_fn(|i| a[i].min(b[i])))
    }

    /// Every component of `self` is at most the one of `other`.
    #[inline]
    pub fn fits_within(&self, other: &ResourceVector) -> bool {
        let (a, b) = (self.as_array(), other.as_array());
        a.iter().zip(b.iter()).all(|(x, y)| x <= y)
    }

    /// The first resource on which `self` exceeds `other`, if any.
    #[inline]
    pub fn first_excess_over(&self, other: &ResourceVector) -> Option<Resource> {
        Resource::ALL.into_iter().find(|&r| self.get(r) > other.get(r))
    }

    /// Sum of many vectors, checked.
    pub fn checked_sum<'a, I>(items: I) -> Result<ResourceVector, ResourceError>
    where
        I: IntoIterator<Item = &'a ResourceVector>,
    {
        items.into_iter().try_fold(ResourceVector::ZERO, |acc, v| acc.checked_add(v))
    }

    /// All components are zero.
    pub fn is_zero(&self) -> bool {
        self.as_array().iter().all(|&x| x == 0)
    }

    fn zip(
        &self,
        other: &ResourceVector,
        f: impl Fn(Resource, u64, u64) -> Result<u64, ResourceError>,
    ) -> Result<ResourceVector, ResourceError> {
        let (a, b) = (self.as_array(), other.as_array());
        let mut out = [0u64; Resource::COUNT];
        for r in Resource::ALL {
            out[r.index()] = f(r, a[r.index()], b[r.index()])?;
        }
        Ok(Self::from_array(out))
    }
}

fn check_amount(resource: Resource, amount: u64) -> Result<(), ResourceError> {
    if amount > MAX_AMOUNT {
        Err(ResourceError::TooLarge { resource, amount })
    } else {
        Ok(())
    }
}

impl fmt::Display for ResourceVector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cpu={}m memory={}B disk_bw={}B/s net_bw={}B/s",
            self.cpu, self.memory, self.disk_bw, self.net_bw
        )?;
        if self.llc != 0 || self.mem_bw != 0 {
            write!(f, " llc={} mem_bw={}B/s", self.llc, self.mem_bw)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_follow_array_order() {
        for (i, r) in Resource::ALL.into_iter().enumerate() {
            assert_eq!(r.index(), i);
            assert_eq!(Resource::from_name(r.name()), Some(r));
        }
        assert_eq!(Resource::from_name("gpu"), None);
    }

    #[test]
    fn checked_arithmetic_reports_the_resource() {
        let a = ResourceVector::new(1000, 10, 0, 0);
        let b = ResourceVector::new(500, 20, 0, 0);
        assert_eq!(a.checked_add(&b).unwrap(), ResourceVector::new(1500, 30, 0, 0));
        assert_eq!(
            a.checked_sub(&b),
            Err(ResourceError::Underflow { resource: Resource::Memory, left: 10, right: 20 })
        );
        assert_eq!(a.saturating_sub(&b), ResourceVector::new(500, 0, 0, 0));
        let big = ResourceVector::new(MAX_AMOUNT, 0, 0, 0);
        assert!(matches!(big.checked_add(&a), Err(ResourceError::Overflow { resource: Resource::Cpu, .. })));
        assert!(ResourceVector::new(MAX_AMOUNT + 1, 0, 0, 0).validate().is_err());
        assert!(ResourceVector::ZERO.with(Resource::Llc, MAX_AMOUNT + 1).is_err());
    }

    #[test]
    fn fits_within_is_component_wise() {
        let cap = ResourceVector::new(4000, 100, 10, 10);
        assert!(ResourceVector::new(4000, 100, 10, 10).fits_within(&cap));
        assert!(!ResourceVector::new(1, 101, 0, 0).fits_within(&cap));
        assert_eq!(ResourceVector::new(1, 101, 0, 0).first_excess_over(&cap), Some(Resource::Memory));
    }
}

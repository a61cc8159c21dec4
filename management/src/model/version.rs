//! Version strings as peers report them and posture checks name them, compared semver-ish.
//!
//! A version is `[v]CORE[SUFFIX][+BUILD]`: `CORE` is one or more dot-separated numbers
//! (missing components count as 0, so `0.45` equals `0.45.0`); `+BUILD` is ignored (semver
//! build metadata, e.g. `0.60.0+swiftgate.0.1.0`); `SUFFIX` is whatever follows the numbers
//! (`-rc1`, `-13-amd64`, `rc1`). What the suffix means depends on what is compared:
//!
//! - agent versions ([`Version::cmp_semver`]): a suffix is a pre-release, as in semver: `0.45.0-rc1` is below `0.45.0` but above `0.44.9`; pre-releases compare by their
//!   dot-separated identifiers, numbers numerically and below words;
//! - kernel and OS versions ([`Version::cmp_release`]): a suffix is a distribution's build tag
//!   and is ignored: kernel `6.1.0-13-amd64` is `6.1.0`.
//!
//! A string that does not start with a number (`development`, empty) is not a version.

use std::cmp::Ordering;
use std::fmt;

/// A parsed version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    core: Vec<u64>,
    pre: Vec<String>,
}

impl Version {
    /// Parses `text`; `None` when it does not start with a number (after an optional `v`) or a
    /// component overflows.
    pub fn parse(text: &str) -> Option<Version> {
        let t = text.trim();
        let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
        let t = t.split_once('+').map_or(t, |(v, _build)| v);
        let mut core = Vec::new();
        let mut rest = t;
        loop {
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            core.push(rest[..end].parse().ok()?);
            rest = &rest[end..];
            match rest.strip_prefix('.') {
                Some(r) if r.starts_with(|c: char| c.is_ascii_digit()) => rest = r,
                _ => break,
            }
        }
        if core.is_empty() {
            return None;
        }
        let suffix = rest.trim_start_matches(['-', '.', '_', '~']);
        let pre = if suffix.is_empty() {
            Vec::new()
        } else {
            suffix.split(['.', '-']).map(str::to_string).collect()
        };
        Some(Version { core, pre })
    }

    /// The numeric components.
    pub fn core(&self) -> &[u64] {
        &self.core
    }

    /// Whether a suffix followed the numbers.
    pub fn is_pre_release(&self) -> bool {
        !self.pre.is_empty()
    }

    fn cmp_core(&self, other: &Version) -> Ordering {
        let n = self.core.len().max(other.core.len());
        (0..n)
            .map(|i| {
                let x = self.core.get(i).copied().unwrap_or(0);
                let y = other.core.get(i).copied().unwrap_or(0);
                x.cmp(&y)
            })
            .find(|o| o.is_ne())
            .unwrap_or(Ordering::Equal)
    }

    /// Semver-ish order: numbers first, then a pre-release is below its release, and
    /// pre-releases compare identifier by identifier (numbers numerically and below words,
    /// words as text, fewer identifiers below more when the rest is equal).
    pub fn cmp_semver(&self, other: &Version) -> Ordering {
        self.cmp_core(other)
            .then_with(|| match (self.pre.is_empty(), other.pre.is_empty()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Greater,
                (false, true) => Ordering::Less,
                (false, false) => {
                    for (a, b) in self.pre.iter().zip(&other.pre) {
                        let o = match (a.parse::<u64>(), b.parse::<u64>()) {
                            (Ok(x), Ok(y)) => x.cmp(&y),
                            (Ok(_), Err(_)) => Ordering::Less,
                            (Err(_), Ok(_)) => Ordering::Greater,
                            (Err(_), Err(_)) => a.cmp(b),
                        };
                        if o.is_ne() {
                            return o;
                        }
                    }
                    self.pre.len().cmp(&other.pre.len())
                }
            })
    }

    /// Order by the numbers alone; suffixes (a kernel's `-13-amd64`) are ignored.
    pub fn cmp_release(&self, other: &Version) -> Ordering {
        self.cmp_core(other)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core: Vec<String> = self.core.iter().map(u64::to_string).collect();
        write!(f, "{}", core.join("."))?;
        if !self.pre.is_empty() {
            write!(f, "-{}", self.pre.join("."))?;
        }
        Ok(())
    }
}

/// Parses the leading dotted numbers of a version: `"v0.45.1-rc1"` -> `[0, 45, 1]`,
/// `"6.1.0-13-amd64"` -> `[6, 1, 0]`, `"22.04"` -> `[22, 4]`. `None` when it does not start
/// with a number.
pub fn parse_version(v: &str) -> Option<Vec<u64>> {
    Version::parse(v).map(|v| v.core)
}

/// Compares two agent versions semver-ishly ([`Version::cmp_semver`]). `None` if either does
/// not parse.
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    Some(Version::parse(a)?.cmp_semver(&Version::parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn semver(a: &str, b: &str) -> Option<Ordering> {
        compare_versions(a, b)
    }

    #[test]
    fn parses_cores_suffixes_and_build_metadata() {
        assert_eq!(parse_version("v0.45.1-rc1"), Some(vec![0, 45, 1]));
        assert_eq!(parse_version("6.1.0-13-amd64"), Some(vec![6, 1, 0]));
        assert_eq!(parse_version("22.04"), Some(vec![22, 4]));
        assert_eq!(
            parse_version("0.60.0+swiftgate.0.1.0"),
            Some(vec![0, 60, 0])
        );
        assert_eq!(
            parse_version("10.0.19045.3930"),
            Some(vec![10, 0, 19045, 3930])
        );
        assert_eq!(parse_version("1.2."), Some(vec![1, 2]));
        for bad in ["development", "", "  ", "v", ".1", "swiftgate/0.1.0"] {
            assert_eq!(parse_version(bad), None, "{bad:?}");
        }
        assert_eq!(parse_version("99999999999999999999999.1"), None, "overflow");
        let v = Version::parse("0.45.0-rc.1+build.7").unwrap();
        assert!(v.is_pre_release());
        assert_eq!(v.to_string(), "0.45.0-rc.1");
        assert!(!Version::parse("0.45.0+x").unwrap().is_pre_release());
    }

    #[test]
    fn agent_versions_compare_semver_ish() {
        use Ordering::*;
        assert_eq!(semver("0.45", "0.45.0"), Some(Equal));
        assert_eq!(
            semver("0.9.0", "0.45.0"),
            Some(Less),
            "numeric, not textual"
        );
        assert_eq!(semver("1.0.0", "0.45.0"), Some(Greater));
        assert_eq!(semver("0.60.0", "0.45.0"), Some(Greater));
        assert_eq!(semver("0.1.0", "0.45.0"), Some(Less));
        assert_eq!(semver("v0.45.0", "0.45.0"), Some(Equal));
        // Build metadata (swiftgate's own version as a suffix) is ignored.
        assert_eq!(semver("0.45.0+swiftgate.0.1.0", "0.45.0"), Some(Equal));
        // Pre-releases sit below their release and above the one before.
        assert_eq!(semver("0.45.0-rc1", "0.45.0"), Some(Less));
        assert_eq!(semver("0.45.0-rc1", "0.44.9"), Some(Greater));
        assert_eq!(semver("0.45.1-rc1", "0.45.0"), Some(Greater));
        assert_eq!(semver("0.45.0-rc.2", "0.45.0-rc.10"), Some(Less));
        assert_eq!(semver("0.45.0-1", "0.45.0-alpha"), Some(Less));
        assert_eq!(semver("0.45.0-alpha", "0.45.0-alpha.1"), Some(Less));
        assert_eq!(semver("0.45.0-beta", "0.45.0-alpha"), Some(Greater));
        assert_eq!(semver("development", "0.45.0"), None);
        assert_eq!(semver("0.45.0", ""), None);
    }

    #[test]
    fn kernel_versions_ignore_build_tags() {
        let v = |s| Version::parse(s).unwrap();
        assert_eq!(v("6.1.0-13-amd64").cmp_release(&v("6.1")), Ordering::Equal);
        assert_eq!(
            v("5.4.0-150-generic").cmp_release(&v("5.10")),
            Ordering::Less
        );
        assert_eq!(
            v("5.15.0-91-generic").cmp_release(&v("5.10")),
            Ordering::Greater
        );
        assert_eq!(
            v("3.10.0-1160.el7.x86_64").cmp_release(&v("3.10")),
            Ordering::Equal
        );
    }
}

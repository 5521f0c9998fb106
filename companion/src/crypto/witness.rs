//! Correlation with the driver: which files does the companion's own process hold open?
//!
//! The crypto scenarios release handles through user-mode APIs; the driver sees the file
//! objects underneath. Asking it before and after a scenario shows a file a release should have
//! closed but did not. The port client implements [`HandleWitness`]; until it is reachable the
//! runner uses [`DriverAbsent`], reports that correlation was skipped and runs everything else.

use std::collections::BTreeSet;
use std::fmt;

/// Why a witness could not answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WitnessError {
    /// The driver's port could not be reached (not loaded, not elevated, or not Windows).
    DriverNotReachable {
        /// What the port client saw, e.g. the HRESULT of FilterConnectCommunicationPort.
        detail: String,
    },
    /// The driver answered, but the query failed.
    #[allow(dead_code, reason = "constructed by the port client's witness, which lives elsewhere")]
    Query(String),
}

impl fmt::Display for WitnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WitnessError::DriverNotReachable { detail } => {
                write!(f, "driver not reachable — correlation skipped ({detail})")
            }
            WitnessError::Query(detail) => write!(f, "driver query failed: {detail}"),
        }
    }
}

impl std::error::Error for WitnessError {}

/// Something that can list the files a process holds open (the driver, through its port).
pub trait HandleWitness {
    /// Paths of the files `pid` holds open whose path starts with one of `under`
    /// (compared case-insensitively, as Windows paths are).
    fn open_files(&self, pid: u32, under: &[&str]) -> Result<Vec<String>, WitnessError>;
}

/// The witness used when no driver port is available.
#[derive(Clone, Debug)]
pub struct DriverAbsent {
    /// Why the driver is not available.
    pub detail: String,
}

impl Default for DriverAbsent {
    fn default() -> Self {
        DriverAbsent { detail: "no port client is wired into `ctxguard crypto`".to_owned() }
    }
}

impl HandleWitness for DriverAbsent {
    fn open_files(&self, _pid: u32, _under: &[&str]) -> Result<Vec<String>, WitnessError> {
        Err(WitnessError::DriverNotReachable { detail: self.detail.clone() })
    }
}

/// The files open in `after` that were not open in `before`: handles a release left open.
/// Windows paths are case-insensitive, so comparison ignores ASCII case.
pub fn left_open(before: &[String], after: &[String]) -> Vec<String> {
    let before: BTreeSet<String> = before.iter().map(|p| p.to_ascii_lowercase()).collect();
    let mut left: Vec<String> =
        after.iter().filter(|p| !before.contains(&p.to_ascii_lowercase())).cloned().collect();
    left.sort();
    left.dedup();
    left
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_absent_says_correlation_is_skipped() {
        let err = DriverAbsent::default().open_files(4, &["C:\\"]).unwrap_err();
        assert!(err.to_string().starts_with("driver not reachable — correlation skipped"), "{err}");
    }

    #[test]
    fn left_open_ignores_case_and_files_open_before() {
        let before = vec!["C:\\Users\\u\\AppData\\Roaming\\Microsoft\\Crypto\\RSA\\a".to_owned()];
        let after = vec![
            "c:\\users\\u\\appdata\\roaming\\microsoft\\crypto\\rsa\\A".to_owned(),
            "C:\\tmp\\store.sst".to_owned(),
        ];
        assert_eq!(left_open(&before, &after), vec!["C:\\tmp\\store.sst".to_owned()]);
        assert!(left_open(&after, &before).is_empty());
    }
}

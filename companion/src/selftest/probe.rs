//! Filter Manager's view of ctxguard: loaded or not, and its instances. The Windows probe asks
//! FltLib (`windows.rs`) and falls back to `fltmc`, whose output is parsed here so that the
//! parser is tested on every host.

use serde::Serialize;

use crate::port::paths;

/// One instance of the filter.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct InstanceInfo {
    /// The volume: a device name (`\Device\HarddiskVolume3`) or, from `fltmc`, a drive (`C:`).
    pub volume: String,
    /// The instance's altitude, when known.
    pub altitude: String,
    /// The instance's name, when known.
    pub name: String,
}

impl InstanceInfo {
    /// Whether `path` (a normalized device path) lies on this instance's volume.
    #[must_use]
    pub fn covers(&self, path: &str) -> bool {
        let volume = paths::to_device_path(&self.volume).to_lowercase();
        let path = path.to_lowercase();
        !volume.is_empty() && path.starts_with(&volume) && matches!(path.as_bytes().get(volume.len()), None | Some(b'\\'))
    }
}

/// ctxguard as Filter Manager lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DriverPresence {
    /// Filter Manager lists the filter.
    pub loaded: bool,
    /// Its instances (empty when not loaded).
    pub instances: Vec<InstanceInfo>,
    /// How it was asked: `fltlib`, `fltmc`, or what a test injected.
    pub source: String,
}

/// Whether `fltmc filters` output lists `filter` (first column, case-insensitive), and its
/// instance count (second column) when it does.
#[must_use]
pub fn parse_fltmc_filters(output: &str, filter: &str) -> Option<u32> {
    output.lines().find_map(|line| {
        let mut columns = line.split_whitespace();
        let name = columns.next()?;
        name.eq_ignore_ascii_case(filter).then(|| columns.next().and_then(|count| count.parse().ok()).unwrap_or(0))
    })
}

/// The instances of `filter` in `fltmc instances -f <filter>` output: rows whose first column
/// is the filter's name; columns are filter, volume, altitude, instance name.
#[must_use]
pub fn parse_fltmc_instances(output: &str, filter: &str) -> Vec<InstanceInfo> {
    output
        .lines()
        .filter_map(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            let (name, volume) = (columns.first()?, columns.get(1)?);
            name.eq_ignore_ascii_case(filter).then(|| InstanceInfo {
                volume: (*volume).to_owned(),
                altitude: columns.get(2).copied().unwrap_or_default().to_owned(),
                name: columns.get(3).copied().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILTERS: &str = "\nFilter Name                     Num Instances    Altitude    Frame\n\
        ------------------------------  -------------  ------------  -----\n\
        bindflt                                 1       409800         0\n\
        CtxGuard                                2       370020         0\n\
        WdFilter                                5       328010         0\n";

    const INSTANCES: &str = "\nFilter                Volume Name                              Altitude        Instance Name       Frame   SprtFtrs  VlStatus\n\
        --------------------  -------------------------------------  ------------  ----------------------  -----   --------  --------\n\
        ctxguard              C:                                        370020     ctxguard Instance         0     0000000f\n\
        ctxguard              \\Device\\HarddiskVolume1                  370020     ctxguard Instance         0     0000000f\n";

    #[test]
    fn fltmc_filters_rows_are_found_by_name() {
        assert_eq!(parse_fltmc_filters(FILTERS, "ctxguard"), Some(2));
        assert_eq!(parse_fltmc_filters(FILTERS, "ctxguar"), None);
        assert_eq!(parse_fltmc_filters("", "ctxguard"), None);
    }

    #[test]
    fn fltmc_instances_rows_give_volumes() {
        let instances = parse_fltmc_instances(INSTANCES, "ctxguard");
        let volumes: Vec<&str> = instances.iter().map(|i| i.volume.as_str()).collect();
        assert_eq!(volumes, ["C:", "\\Device\\HarddiskVolume1"]);
        assert_eq!(instances[1].altitude, "370020");
        assert!(instances[1].covers("\\Device\\HarddiskVolume1\\Temp\\x"));
        assert!(!instances[1].covers("\\Device\\HarddiskVolume10\\Temp\\x"));
    }
}

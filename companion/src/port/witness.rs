//! `ctxguard crypto`'s driver correlation: [`HandleWitness`] over QueryHandles.
//!
//! Compiled into the binary (beside the crypto module whose trait it implements), not into the
//! companion library.

use ctxguard_companion::port::{Client, Connector, PortError, paths};

use crate::crypto::witness::{DriverAbsent, HandleWitness, WitnessError};

/// Asks the driver, through one connection, which files a process holds open.
pub struct PortWitness {
    client: Client,
}

impl PortWitness {
    /// A witness over `connector`, or [`DriverAbsent`] saying why the driver cannot be asked.
    pub fn connect_or_absent(connector: &dyn Connector) -> Box<dyn HandleWitness> {
        match Client::connect(connector, false) {
            Ok(client) => Box::new(Self { client }),
            Err(error) => Box::new(DriverAbsent { detail: error.to_string() }),
        }
    }
}

impl HandleWitness for PortWitness {
    fn open_files(&self, pid: u32, under: &[&str]) -> Result<Vec<String>, WitnessError> {
        let prefixes: Vec<String> =
            if under.is_empty() { vec![String::new()] } else { under.iter().map(|path| paths::to_device_path(path)).collect() };
        let mut files = Vec::new();
        for prefix in &prefixes {
            let handles = self.client.handles(Some(pid), prefix).map_err(|error| match error {
                PortError::DriverNotLoaded | PortError::AccessDenied | PortError::NotReachable(_) => {
                    WitnessError::DriverNotReachable { detail: error.to_string() }
                }
                other => WitnessError::Query(other.to_string()),
            })?;
            files.extend(handles.into_iter().map(|handle| paths::to_dos_path(&handle.name)));
        }
        files.sort();
        files.dedup();
        Ok(files)
    }
}

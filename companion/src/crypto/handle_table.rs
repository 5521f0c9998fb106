//! Parsing of `NtQuerySystemInformation(SystemExtendedHandleInformation)`'s buffer, kept free of
//! Windows APIs so it is unit-tested on any host.

/// SYSTEM_HANDLE_INFORMATION_EX header on x64: NumberOfHandles, Reserved (two ULONG_PTR).
pub const HEADER_SIZE: usize = 16;
/// SYSTEM_HANDLE_TABLE_ENTRY_INFO_EX on x64: Object, UniqueProcessId, HandleValue (ULONG_PTR
/// each), GrantedAccess (ULONG), two USHORTs, HandleAttributes, Reserved (ULONG).
pub const ENTRY_SIZE: usize = 40;
/// Offset of UniqueProcessId in an entry.
const ENTRY_PID_OFFSET: usize = 8;

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let chunk: [u8; 8] = bytes.get(offset..offset.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

/// Counts the entries of `table` (a SYSTEM_HANDLE_INFORMATION_EX) that belong to `pid`.
pub fn count_own(table: &[u8], pid: u64) -> Result<u64, String> {
    let total = read_u64(table, 0).ok_or("handle table shorter than its header")?;
    let total = usize::try_from(total).map_err(|_| "handle count overflows")?;
    let needed = total.checked_mul(ENTRY_SIZE).and_then(|n| n.checked_add(HEADER_SIZE)).ok_or("handle count overflows")?;
    if needed > table.len() {
        return Err(format!("handle table claims {total} entries but holds {} bytes", table.len()));
    }
    let mut own = 0;
    for index in 0..total {
        if read_u64(table, HEADER_SIZE + index * ENTRY_SIZE + ENTRY_PID_OFFSET) == Some(pid) {
            own += 1;
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(pids: &[u64]) -> Vec<u8> {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&(pids.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        for (i, pid) in pids.iter().enumerate() {
            let mut entry = [0u8; ENTRY_SIZE];
            entry[0..8].copy_from_slice(&(0xffff_8000_0000_0000u64 + i as u64).to_le_bytes());
            entry[8..16].copy_from_slice(&pid.to_le_bytes());
            entry[16..24].copy_from_slice(&(4 * (i as u64 + 1)).to_le_bytes());
            bytes.extend_from_slice(&entry);
        }
        bytes
    }

    #[test]
    fn counts_only_the_given_process() {
        let t = table(&[4, 77, 77, 1000, 77]);
        assert_eq!(count_own(&t, 77), Ok(3));
        assert_eq!(count_own(&t, 4), Ok(1));
        assert_eq!(count_own(&t, 5), Ok(0));
    }

    #[test]
    fn a_truncated_table_is_an_error_not_a_panic() {
        let t = table(&[77, 77]);
        assert!(count_own(&t[..t.len() - 1], 77).is_err());
        assert!(count_own(&t[..3], 77).is_err());
        let mut huge = t.clone();
        huge[0..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(count_own(&huge, 77).is_err());
    }
}

//! Generic tables: the splay-tree (RtlInitializeGenericTable …) and AVL-tree
//! (RtlInitializeGenericTableAvl …) interfaces of ntddk.h. fltemu keeps each table's elements in
//! a vector ordered by the driver's CompareRoutine (so lookups call it as the trees would, with
//! the same results) and gets every element's memory from the driver's AllocateRoutine and
//! returns it through its FreeRoutine, so elements still in a table at unload are the driver's
//! PoolLeaked. A call on a table never initialised → ObjectMisuse.

use crate::catalog::{Emulated, Source};
use crate::objects::{self, ObjectKind, Table};

const ANY: u8 = 15;
/// RTL_GENERIC_COMPARE_RESULTS.
const LESS_THAN: u32 = 0;
const GREATER_THAN: u32 = 1;

#[derive(Clone)]
struct GenericTable {
    compare: usize,
    allocate: usize,
    free: usize,
    /// Where an element's caller data starts inside the block the allocate routine returns
    /// (after the tree links the real implementations keep there).
    header: usize,
    /// Element blocks, in CompareRoutine order.
    blocks: Vec<usize>,
    /// RtlEnumerateGenericTable's position.
    cursor: usize,
}

static TABLES: Table<usize, GenericTable> = Table::new();

/// Forgets every table (a new emulator loads).
pub fn reset() {
    TABLES.clear();
}

fn get(function: &'static str, table: usize) -> Option<GenericTable> {
    let found = TABLES.with(|t| t.get(&table).cloned());
    if found.is_none() {
        objects::misuse(function, ObjectKind::Table, "a table never initialised with RtlInitializeGenericTable(Avl)");
    }
    found
}

fn compare(entry: &GenericTable, table: usize, a: usize, b: usize) -> u32 {
    // SAFETY: the driver's PRTL_GENERIC_COMPARE_ROUTINE / PRTL_AVL_COMPARE_ROUTINE.
    let routine = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize, usize) -> u32>(entry.compare) };
    // SAFETY: (Table, FirstStruct, SecondStruct) as the DDI documents.
    unsafe { routine(table, a, b) }
}

/// Binary search with the driver's comparisons: Ok(index) when equal, Err(insertion point).
fn search(entry: &GenericTable, table: usize, buffer: usize) -> Result<usize, usize> {
    let (mut low, mut high) = (0, entry.blocks.len());
    while low < high {
        let middle = usize::midpoint(low, high);
        match compare(entry, table, buffer, entry.blocks[middle] + entry.header) {
            LESS_THAN => high = middle,
            GREATER_THAN => low = middle + 1,
            _ => return Ok(middle),
        }
    }
    Err(low)
}

fn initialize(function: &'static str, table: usize, compare: usize, allocate: usize, free: usize, header: usize) {
    objects::count(function, ANY);
    if table == 0 || compare == 0 || allocate == 0 || free == 0 {
        objects::misuse(function, ObjectKind::Table, "a NULL table or routine");
        return;
    }
    TABLES.with(|t| t.insert(table, GenericTable { compare, allocate, free, header, blocks: Vec::new(), cursor: 0 }));
}

fn insert(function: &'static str, table: usize, buffer: usize, size: u32, new_element: *mut u8) -> usize {
    objects::count(function, ANY);
    let Some(mut entry) = get(function, table) else { return 0 };
    let found = search(&entry, table, buffer);
    let set_new = |value: u8| {
        if !new_element.is_null() {
            // SAFETY: the caller's optional out BOOLEAN (one byte: any address is aligned).
            unsafe { new_element.write(value) };
        }
    };
    let at = match found {
        Ok(index) => {
            set_new(0);
            return entry.blocks[index] + entry.header;
        }
        Err(at) => at,
    };
    // SAFETY: the driver's PRTL_GENERIC_ALLOCATE_ROUTINE (Table, ByteSize).
    let allocate = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, u32) -> usize>(entry.allocate) };
    // SAFETY: ByteSize = the implementation's header + BufferSize, as the DDI documents.
    let block = unsafe { allocate(table, entry.header as u32 + size) };
    if block == 0 {
        set_new(0);
        return 0;
    }
    // SAFETY: the allocate routine returned ByteSize bytes; the header is zeroed, the caller's
    // data copied after it.
    unsafe { core::ptr::write_bytes(block as *mut u8, 0, entry.header) };
    // SAFETY: as above.
    unsafe { core::ptr::copy_nonoverlapping(buffer as *const u8, (block + entry.header) as *mut u8, size as usize) };
    entry.blocks.insert(at, block);
    let element = block + entry.header;
    TABLES.with(|t| t.insert(table, entry));
    set_new(1);
    element
}

fn lookup(function: &'static str, table: usize, buffer: usize) -> usize {
    objects::count(function, ANY);
    let Some(entry) = get(function, table) else { return 0 };
    search(&entry, table, buffer).map_or(0, |index| entry.blocks[index] + entry.header)
}

fn delete(function: &'static str, table: usize, buffer: usize) -> u8 {
    objects::count(function, ANY);
    let Some(mut entry) = get(function, table) else { return 0 };
    let Ok(index) = search(&entry, table, buffer) else { return 0 };
    let block = entry.blocks.remove(index);
    let free = entry.free;
    TABLES.with(|t| t.insert(table, entry));
    // SAFETY: the driver's PRTL_GENERIC_FREE_ROUTINE (Table, Buffer).
    let free = unsafe { core::mem::transmute::<usize, unsafe extern "win64" fn(usize, usize)>(free) };
    // SAFETY: the block its allocate routine returned for this element.
    unsafe { free(table, block) };
    1
}

fn element(function: &'static str, table: usize, index: u32) -> usize {
    objects::count(function, ANY);
    get(function, table).and_then(|e| e.blocks.get(index as usize).map(|b| b + e.header)).unwrap_or(0)
}

fn count(function: &'static str, table: usize) -> u32 {
    objects::count(function, ANY);
    get(function, table).map_or(0, |e| e.blocks.len() as u32)
}

/// RtlEnumerateGenericTable(Avl): Restart → the first element; then each next; NULL at the end.
fn enumerate(function: &'static str, table: usize, restart: u8) -> usize {
    objects::count(function, ANY);
    let Some(mut entry) = get(function, table) else { return 0 };
    if restart != 0 {
        entry.cursor = 0;
    }
    let found = entry.blocks.get(entry.cursor).map(|b| b + entry.header);
    entry.cursor += usize::from(found.is_some());
    TABLES.with(|t| t.insert(table, entry));
    found.unwrap_or(0)
}

/// RtlEnumerateGenericTableWithoutSplaying(Avl): *RestartKey NULL → the first element; the
/// key then names the element returned, and the next call returns the one after it.
fn enumerate_without_splaying(function: &'static str, table: usize, restart_key: *mut usize) -> usize {
    objects::count(function, ANY);
    let Some(entry) = get(function, table) else { return 0 };
    if restart_key.is_null() {
        objects::misuse(function, ObjectKind::Table, "a NULL RestartKey");
        return 0;
    }
    // SAFETY: the caller's RestartKey variable.
    let key = unsafe { restart_key.read_unaligned() };
    let next = if key == 0 { 0 } else { entry.blocks.iter().position(|b| *b == key).map_or(entry.blocks.len(), |i| i + 1) };
    let block = entry.blocks.get(next).copied().unwrap_or(0);
    // SAFETY: as above.
    unsafe { restart_key.write_unaligned(block) };
    if block == 0 { 0 } else { block + entry.header }
}

/// Header sizes: RTL_SPLAY_LINKS + LIST_ENTRY (splay tables), RTL_BALANCED_LINKS (AVL tables).
const SPLAY_HEADER: usize = 0x28;
const AVL_HEADER: usize = 0x20;

extern "win64" fn rtl_initialize_generic_table(table: usize, compare: usize, allocate: usize, free: usize, _context: usize) {
    initialize("RtlInitializeGenericTable", table, compare, allocate, free, SPLAY_HEADER);
}
extern "win64" fn rtl_insert_element_generic_table(table: usize, buffer: usize, size: u32, new_element: *mut u8) -> usize {
    insert("RtlInsertElementGenericTable", table, buffer, size, new_element)
}
extern "win64" fn rtl_lookup_element_generic_table(table: usize, buffer: usize) -> usize {
    lookup("RtlLookupElementGenericTable", table, buffer)
}
extern "win64" fn rtl_delete_element_generic_table(table: usize, buffer: usize) -> u8 {
    delete("RtlDeleteElementGenericTable", table, buffer)
}
extern "win64" fn rtl_get_element_generic_table(table: usize, index: u32) -> usize {
    element("RtlGetElementGenericTable", table, index)
}
extern "win64" fn rtl_number_generic_table_elements(table: usize) -> u32 {
    count("RtlNumberGenericTableElements", table)
}
extern "win64" fn rtl_is_generic_table_empty(table: usize) -> u8 {
    u8::from(count("RtlIsGenericTableEmpty", table) == 0)
}
extern "win64" fn rtl_enumerate_generic_table(table: usize, restart: u8) -> usize {
    enumerate("RtlEnumerateGenericTable", table, restart)
}
extern "win64" fn rtl_enumerate_generic_table_without_splaying(table: usize, restart_key: *mut usize) -> usize {
    enumerate_without_splaying("RtlEnumerateGenericTableWithoutSplaying", table, restart_key)
}
extern "win64" fn rtl_initialize_generic_table_avl(table: usize, compare: usize, allocate: usize, free: usize, _context: usize) {
    initialize("RtlInitializeGenericTableAvl", table, compare, allocate, free, AVL_HEADER);
}
extern "win64" fn rtl_insert_element_generic_table_avl(table: usize, buffer: usize, size: u32, new_element: *mut u8) -> usize {
    insert("RtlInsertElementGenericTableAvl", table, buffer, size, new_element)
}
extern "win64" fn rtl_lookup_element_generic_table_avl(table: usize, buffer: usize) -> usize {
    lookup("RtlLookupElementGenericTableAvl", table, buffer)
}
extern "win64" fn rtl_delete_element_generic_table_avl(table: usize, buffer: usize) -> u8 {
    delete("RtlDeleteElementGenericTableAvl", table, buffer)
}
extern "win64" fn rtl_get_element_generic_table_avl(table: usize, index: u32) -> usize {
    element("RtlGetElementGenericTableAvl", table, index)
}
extern "win64" fn rtl_number_generic_table_elements_avl(table: usize) -> u32 {
    count("RtlNumberGenericTableElementsAvl", table)
}
extern "win64" fn rtl_is_generic_table_empty_avl(table: usize) -> u8 {
    u8::from(count("RtlIsGenericTableEmptyAvl", table) == 0)
}
extern "win64" fn rtl_enumerate_generic_table_avl(table: usize, restart: u8) -> usize {
    enumerate("RtlEnumerateGenericTableAvl", table, restart)
}
extern "win64" fn rtl_enumerate_generic_table_without_splaying_avl(table: usize, restart_key: *mut usize) -> usize {
    enumerate_without_splaying("RtlEnumerateGenericTableWithoutSplayingAvl", table, restart_key)
}

/// ntoskrnl.exe exports of this module.
pub fn resolve(name: &str) -> Option<usize> {
    Some(match name {
        "RtlInitializeGenericTable" => rtl_initialize_generic_table as *const () as usize,
        "RtlInsertElementGenericTable" => rtl_insert_element_generic_table as *const () as usize,
        "RtlLookupElementGenericTable" => rtl_lookup_element_generic_table as *const () as usize,
        "RtlDeleteElementGenericTable" => rtl_delete_element_generic_table as *const () as usize,
        "RtlGetElementGenericTable" => rtl_get_element_generic_table as *const () as usize,
        "RtlNumberGenericTableElements" => rtl_number_generic_table_elements as *const () as usize,
        "RtlIsGenericTableEmpty" => rtl_is_generic_table_empty as *const () as usize,
        "RtlEnumerateGenericTable" => rtl_enumerate_generic_table as *const () as usize,
        "RtlEnumerateGenericTableWithoutSplaying" => rtl_enumerate_generic_table_without_splaying as *const () as usize,
        "RtlInitializeGenericTableAvl" => rtl_initialize_generic_table_avl as *const () as usize,
        "RtlInsertElementGenericTableAvl" => rtl_insert_element_generic_table_avl as *const () as usize,
        "RtlLookupElementGenericTableAvl" => rtl_lookup_element_generic_table_avl as *const () as usize,
        "RtlDeleteElementGenericTableAvl" => rtl_delete_element_generic_table_avl as *const () as usize,
        "RtlGetElementGenericTableAvl" => rtl_get_element_generic_table_avl as *const () as usize,
        "RtlNumberGenericTableElementsAvl" => rtl_number_generic_table_elements_avl as *const () as usize,
        "RtlIsGenericTableEmptyAvl" => rtl_is_generic_table_empty_avl as *const () as usize,
        "RtlEnumerateGenericTableAvl" => rtl_enumerate_generic_table_avl as *const () as usize,
        "RtlEnumerateGenericTableWithoutSplayingAvl" => rtl_enumerate_generic_table_without_splaying_avl as *const () as usize,
        _ => return None,
    })
}

const fn nt(function: &'static str, notes: &'static str) -> Emulated {
    Emulated { dll: "ntoskrnl.exe", function, notes, source: Source::Ddi("ntddk") }
}

/// The catalog rows of this module.
pub const DOCS: &[Emulated] = &[
    nt("RtlInitializeGenericTable", "the caller's IRQL (its routines' rules apply); compare/allocate/free routines recorded; a NULL one → ObjectMisuse"),
    nt("RtlInsertElementGenericTable", "the driver's CompareRoutine orders the elements; an equal one → it, NewElement FALSE; else AllocateRoutine(header + BufferSize), the buffer copied after the header, NewElement TRUE; allocation NULL → NULL; an uninitialised table → ObjectMisuse"),
    nt("RtlLookupElementGenericTable", "the equal element (by CompareRoutine) or NULL"),
    nt("RtlDeleteElementGenericTable", "the element's block goes back through FreeRoutine; FALSE when none is equal"),
    nt("RtlGetElementGenericTable", "the I-th element in CompareRoutine order, NULL past the end"),
    nt("RtlNumberGenericTableElements", "the element count"),
    nt("RtlIsGenericTableEmpty", "no elements"),
    nt("RtlEnumerateGenericTable", "Restart → the first element, then each next, NULL at the end"),
    nt("RtlEnumerateGenericTableWithoutSplaying", "*RestartKey NULL → the first element; the key names the last one returned"),
    nt("RtlInitializeGenericTableAvl", "as RtlInitializeGenericTable (an RTL_AVL_TABLE)"),
    nt("RtlInsertElementGenericTableAvl", "as RtlInsertElementGenericTable"),
    nt("RtlLookupElementGenericTableAvl", "as RtlLookupElementGenericTable"),
    nt("RtlDeleteElementGenericTableAvl", "as RtlDeleteElementGenericTable"),
    nt("RtlGetElementGenericTableAvl", "as RtlGetElementGenericTable"),
    nt("RtlNumberGenericTableElementsAvl", "as RtlNumberGenericTableElements"),
    nt("RtlIsGenericTableEmptyAvl", "as RtlIsGenericTableEmpty"),
    nt("RtlEnumerateGenericTableAvl", "as RtlEnumerateGenericTable"),
    nt("RtlEnumerateGenericTableWithoutSplayingAvl", "as RtlEnumerateGenericTableWithoutSplaying"),
];

#[cfg(test)]
mod tests {
    use super::*;

    extern "win64" fn by_value(_table: usize, a: usize, b: usize) -> u32 {
        // SAFETY: the test's elements are u32s.
        let a = unsafe { (a as *const u32).read_unaligned() };
        // SAFETY: as above.
        let b = unsafe { (b as *const u32).read_unaligned() };
        match a.cmp(&b) {
            std::cmp::Ordering::Less => LESS_THAN,
            std::cmp::Ordering::Greater => GREATER_THAN,
            std::cmp::Ordering::Equal => 2,
        }
    }

    extern "win64" fn allocate(_table: usize, size: u32) -> usize {
        Box::into_raw(vec![0u8; size as usize].into_boxed_slice()).cast::<u8>() as usize
    }

    extern "win64" fn free(_table: usize, _block: usize) {}

    #[test]
    fn elements_are_ordered_by_the_compare_routine_and_found_again() {
        let mut storage = [0u64; 13];
        let table = storage.as_mut_ptr() as usize;
        rtl_initialize_generic_table_avl(table, by_value as *const () as usize, allocate as *const () as usize, free as *const () as usize, 0);
        let mut new = 0u8;
        for value in [30u32, 10, 20, 10] {
            let element = rtl_insert_element_generic_table_avl(table, (&raw const value) as usize, 4, &raw mut new);
            // SAFETY: the element holds the 4 bytes copied.
            assert_eq!(unsafe { (element as *const u32).read_unaligned() }, value);
        }
        assert_eq!(new, 0, "the second 10 found the first");
        assert_eq!(rtl_number_generic_table_elements_avl(table), 3);
        let order: Vec<u32> = (0..3).map(|i| rtl_get_element_generic_table_avl(table, i)).map(|e| {
            // SAFETY: elements hold u32s.
            unsafe { (e as *const u32).read_unaligned() }
        }).collect();
        assert_eq!(order, [10, 20, 30]);
        let mut key = 0usize;
        let mut seen = Vec::new();
        loop {
            let e = rtl_enumerate_generic_table_without_splaying_avl(table, &raw mut key);
            if e == 0 {
                break;
            }
            // SAFETY: as above.
            seen.push(unsafe { (e as *const u32).read_unaligned() });
        }
        assert_eq!(seen, [10, 20, 30]);
        let twenty = 20u32;
        assert_ne!(rtl_lookup_element_generic_table_avl(table, (&raw const twenty) as usize), 0);
        assert_eq!(rtl_delete_element_generic_table_avl(table, (&raw const twenty) as usize), 1);
        assert_eq!(rtl_lookup_element_generic_table_avl(table, (&raw const twenty) as usize), 0);
        assert_eq!(rtl_delete_element_generic_table_avl(table, (&raw const twenty) as usize), 0);
        assert_eq!(rtl_is_generic_table_empty_avl(table), 0);
    }
}

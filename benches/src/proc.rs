//! Process and kernel measurements (RSS, slab, CPU).

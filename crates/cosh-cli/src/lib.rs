//! What the `cosh` command reads from files, as a library: the topology file (`cosh up
//! --topology FILE`), parsed and checked here so that it can be tested and fuzzed on its own.

#![forbid(unsafe_code)]

pub mod topology_file;

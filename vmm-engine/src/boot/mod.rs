//! Getting a guest to its first instruction: direct Linux boot
//! ([`linux`]) and x86 CPU state for 64-bit entry ([`x86`]).

pub mod linux;
pub mod x86;

//! `sipsentry bench`: per-call latency in microseconds.
//!
//! SIPp reports response times in whole milliseconds; screening costs tens of
//! microseconds. This is the instrument for the difference: [`uac`] is the
//! trunk side (open-loop load, measured per call), [`uas`] the PBX side, and
//! [`report`] the HDR-histogram summary. `--compare` interleaves one schedule
//! over two targets (through the proxy and straight to the UAS) so the
//! difference is the latency the proxy adds, measured under the same load.

pub mod report;
pub mod uac;
pub mod uas;

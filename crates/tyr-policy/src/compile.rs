//! Effective set → kernel tables, the per-rule enforcement report, and the table emulator.

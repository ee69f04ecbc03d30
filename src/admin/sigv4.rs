//! AWS Signature Version 4 verification (placeholder being written).

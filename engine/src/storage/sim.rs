//! In-memory simulated disk (being written).
